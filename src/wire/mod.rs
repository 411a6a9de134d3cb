//! The protocols' wire types, in a place of their own: the provider clients
//! that send them and `ftsweep serve` that answers them both own them, and
//! the store keeps `serve`'s objects, so none of those imports another for them.

pub mod openai;
pub mod together;
