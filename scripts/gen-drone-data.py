#!/usr/bin/env python3
"""Write tests/data/drone-cookbook.jsonl: 100 lines in the shape of OpenAI's cookbook file
examples/data/drone_training.jsonl (the function-calling fine-tuning example of
"Fine tuning for function calling"), which is too large a repository to fetch whole.

Re-run it (from the repository root) with:

    python3 scripts/gen-drone-data.py
    cargo run -- data split tests/data/drone-cookbook.jsonl --valid 0.2 --seed 42 --force

What is copied from the cookbook file (read from its first 16,000 characters): the system
prompt, the 16 tool definitions (names, descriptions, parameters, enums, `required`, in its
order), the keys of a line in its order (`messages`, `parallel_tool_calls: false`, `tools`), an
assistant message of `role` and `tool_calls` only (no `content`), each call with
`"id": "call_id"`, and arguments written by Python's `json.dumps` (`", "` and `": "`). Its
third line's arguments are JSON-encoded twice (a JSON string holding the object's text); line 3
here keeps that quirk, with the same request.

What is ours: the user requests (several phrasings per call, so that several lines share each
call, and refusals for what no function can do or what is ambiguous) and the calls' values.
Deterministic: no randomness; the same script writes the same bytes.
"""

import json
import os

SYSTEM = (
    "You are an intelligent AI that controls a drone. Given a command or request from the user,\n"
    "call one of your functions to complete the request. If the request cannot be completed by your "
    "available functions, call the reject_request function.\n"
    "If the request is ambiguous or unclear, reject the request."
)


def function(name, description, properties=None, required=None):
    parameters = {"type": "object", "properties": properties or {}}
    if required:
        parameters["required"] = required
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def on_off(description):
    return {"type": "string", "enum": ["on", "off"], "description": description}


TOOLS = [
    function(
        "takeoff_drone",
        "Initiate the drone's takeoff sequence.",
        {"altitude": {"type": "integer", "description": "Specifies the altitude in meters to which the drone should ascend."}},
        ["altitude"],
    ),
    function(
        "land_drone",
        "Land the drone at its current location or a specified landing point.",
        {
            "location": {
                "type": "string",
                "enum": ["current", "home_base", "custom"],
                "description": "Specifies the landing location for the drone.",
            },
            "coordinates": {
                "type": "object",
                "description": "GPS coordinates for custom landing location. Required if location is 'custom'.",
            },
        },
        ["location"],
    ),
    function(
        "control_drone_movement",
        "Direct the drone's movement in a specific direction.",
        {
            "direction": {
                "type": "string",
                "enum": ["forward", "backward", "left", "right", "up", "down"],
                "description": "Direction in which the drone should move.",
            },
            "distance": {
                "type": "integer",
                "description": "Distance in meters the drone should travel in the specified direction.",
            },
        },
        ["direction", "distance"],
    ),
    function(
        "set_drone_speed",
        "Adjust the speed of the drone.",
        {"speed": {"type": "integer", "description": "Specifies the speed in km/h."}},
        ["speed"],
    ),
    function(
        "control_camera",
        "Control the drone's camera to capture images or videos.",
        {
            "mode": {"type": "string", "enum": ["photo", "video", "panorama"], "description": "Camera mode to capture content."},
            "duration": {
                "type": "integer",
                "description": "Duration in seconds for video capture. Required if mode is 'video'.",
            },
        },
        ["mode"],
    ),
    function(
        "control_gimbal",
        "Adjust the drone's gimbal for camera stabilization and direction.",
        {
            "tilt": {"type": "integer", "description": "Tilt angle for the gimbal in degrees."},
            "pan": {"type": "integer", "description": "Pan angle for the gimbal in degrees."},
        },
        ["tilt", "pan"],
    ),
    function(
        "set_drone_lighting",
        "Control the drone's lighting for visibility and signaling.",
        {"mode": {"type": "string", "enum": ["on", "off", "blink", "sos"], "description": "Lighting mode for the drone."}},
        ["mode"],
    ),
    function("return_to_home", "Command the drone to return to its home or launch location."),
    function("set_battery_saver_mode", "Toggle battery saver mode.", {"status": on_off("Toggle battery saver mode.")}, ["status"]),
    function("set_obstacle_avoidance", "Configure obstacle avoidance settings.", {"mode": on_off("Toggle obstacle avoidance.")}, ["mode"]),
    function("set_follow_me_mode", "Enable or disable 'follow me' mode.", {"status": on_off("Toggle 'follow me' mode.")}, ["status"]),
    function("calibrate_sensors", "Initiate calibration sequence for drone's sensors."),
    function("set_autopilot", "Enable or disable autopilot mode.", {"status": on_off("Toggle autopilot mode.")}, ["status"]),
    function(
        "configure_led_display",
        "Configure the drone's LED display pattern and colors.",
        {
            "pattern": {"type": "string", "enum": ["solid", "blink", "pulse", "rainbow"], "description": "Pattern for the LED display."},
            "color": {
                "type": "string",
                "enum": ["red", "blue", "green", "yellow", "white"],
                "description": "Color for the LED display. Not required if pattern is 'rainbow'.",
            },
        },
        ["pattern"],
    ),
    function(
        "set_home_location",
        "Set or change the home location for the drone.",
        {"coordinates": {"type": "object", "description": "GPS coordinates for the home location."}},
        ["coordinates"],
    ),
    function("reject_request", "Use this function if the request is not possible."),
]

PIER = {"latitude": 37.7955, "longitude": -122.3937}
PARK = {"latitude": 40.7812, "longitude": -73.9665}

# (call name, arguments, the requests answered with that call)
CALLS = [
    ("takeoff_drone", {"altitude": 100}, [
        "Let's get the drone in the air, can you make it take off",
        "Can you lift the drone to 100 feet off the ground",
        "Take off and climb to 100 meters",
        "Get airborne at an altitude of 100 m",
    ]),
    ("takeoff_drone", {"altitude": 50}, [
        "Take off to 50 meters",
        "Lift off and hover at fifty meters",
        "Start the flight and go up to 50 m",
    ]),
    ("land_drone", {"location": "current"}, [
        "Can you safely bring the drone down to the ground here?",
        "Land right where you are",
        "Put the drone down at its current spot",
        "Touch down here, please",
    ]),
    ("land_drone", {"location": "home_base"}, [
        "Land the drone at the home base",
        "Bring it down on the home base pad",
        "Go land at home base",
        "Set the drone down back at base",
    ]),
    ("land_drone", {"location": "custom", "coordinates": PIER}, [
        "Land at the pier, latitude 37.7955, longitude -122.3937",
        "Set down at GPS 37.7955, -122.3937",
        "Make a landing at coordinates 37.7955 N, 122.3937 W",
    ]),
    ("control_drone_movement", {"direction": "forward", "distance": 100}, [
        "Move the drone forward 100 meters",
        "Fly ahead a hundred meters",
        "Go forward by 100 m",
        "Advance 100 meters straight ahead",
    ]),
    ("control_drone_movement", {"direction": "up", "distance": 20}, [
        "Climb another 20 meters",
        "Go up 20 m",
        "Raise the drone by twenty meters",
    ]),
    ("control_drone_movement", {"direction": "left", "distance": 10}, [
        "Shift 10 meters to the left",
        "Move left by ten meters",
        "Slide over 10 m to your left",
    ]),
    ("set_drone_speed", {"speed": 40}, [
        "Set the speed to 40 km/h",
        "Fly at forty kilometers per hour",
        "Change the cruising speed to 40",
    ]),
    ("set_drone_speed", {"speed": 15}, [
        "Slow down to 15 km/h",
        "Reduce speed to fifteen kilometers an hour",
        "Keep it at a gentle 15 km/h",
    ]),
    ("control_camera", {"mode": "photo"}, [
        "Take a picture",
        "Snap a photo of the view",
        "Capture a still image now",
        "Grab a photo with the camera",
    ]),
    ("control_camera", {"mode": "video", "duration": 60}, [
        "Record a one-minute video",
        "Film for 60 seconds",
        "Start a video and stop after a minute",
        "Shoot 60 seconds of footage",
    ]),
    ("control_camera", {"mode": "panorama"}, [
        "Take a panorama of the landscape",
        "Capture a panoramic shot",
        "Get me a 360 panorama picture",
    ]),
    ("control_gimbal", {"tilt": 45, "pan": 90}, [
        "Tilt the gimbal 45 degrees and pan it 90",
        "Point the camera down 45 degrees and turn it 90 degrees to the right",
        "Set the gimbal to tilt 45, pan 90",
    ]),
    ("set_drone_lighting", {"mode": "on"}, [
        "Turn on the drone's lights",
        "Switch the lights on so we can see it",
        "Lights on, please",
    ]),
    ("set_drone_lighting", {"mode": "sos"}, [
        "Flash an SOS signal with the lights",
        "Signal for help with the lights",
        "Set the lighting to SOS mode",
    ]),
    ("return_to_home", {}, [
        "Come back home",
        "Return to the launch point",
        "Fly back to where you started",
        "Head home now",
    ]),
    ("set_battery_saver_mode", {"status": "on"}, [
        "Turn on battery saver mode",
        "Save battery, the charge is getting low",
        "Enable the power saving mode",
        "Switch battery saver on",
    ]),
    ("set_battery_saver_mode", {"status": "off"}, [
        "Turn off battery saver",
        "Disable the battery saving mode",
        "Battery saver off, I need full power",
    ]),
    ("set_obstacle_avoidance", {"mode": "on"}, [
        "Turn on obstacle avoidance",
        "Make sure the drone avoids obstacles",
        "Enable collision avoidance",
    ]),
    ("set_follow_me_mode", {"status": "on"}, [
        "Follow me",
        "Turn on follow me mode",
        "Keep following me while I walk",
    ]),
    ("calibrate_sensors", {}, [
        "Calibrate the sensors",
        "Run a sensor calibration before we fly",
        "The compass seems off, recalibrate the sensors",
        "Start the sensor calibration sequence",
    ]),
    ("set_autopilot", {"status": "on"}, [
        "Turn on autopilot",
        "Engage the autopilot",
        "Let the autopilot fly for a while",
    ]),
    ("set_autopilot", {"status": "off"}, [
        "Turn off autopilot",
        "Disengage autopilot, I'll take manual control",
        "Switch the autopilot off",
    ]),
    ("configure_led_display", {"pattern": "rainbow"}, [
        "Make the LEDs show a rainbow",
        "Set the LED display to the rainbow pattern",
        "Rainbow lights on the LED panel",
    ]),
    ("configure_led_display", {"pattern": "solid", "color": "red"}, [
        "Set the LED display to solid red",
        "Make the LEDs steady red",
        "Show a solid red light on the LED panel",
    ]),
    ("set_home_location", {"coordinates": PARK}, [
        "Set home to latitude 40.7812, longitude -73.9665",
        "Change the home location to 40.7812, -73.9665",
        "Make 40.7812 N, 73.9665 W the new home point",
    ]),
    ("reject_request", {}, [
        "Decide best landing spot using AI",
        "Program drone's route based on wind direction",
        "Make me a cup of coffee",
        "Deliver this package to my neighbor",
        "Do the thing",
        "Fly somewhere nice",
        "Spray the crops in the field",
        "Play some music through the drone's speaker",
        "Scan the area with thermal imaging",
        "Go over there",
    ]),
]


def line(request, name, arguments, double_encoded=False):
    text = json.dumps(arguments)
    if double_encoded:
        text = json.dumps(text)
    call = {"id": "call_id", "type": "function", "function": {"name": name, "arguments": text}}
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": request},
            {"role": "assistant", "tool_calls": [call]},
        ],
        "parallel_tool_calls": False,
        "tools": TOOLS,
    }


def main():
    assert len(TOOLS) == 16
    lines = []
    # The calls' requests in rounds (each call's first request, then each one's second, ...), so
    # that any stretch of the file mixes calls, as the cookbook file does.
    for k in range(max(len(requests) for _, _, requests in CALLS)):
        for name, arguments, requests in CALLS:
            if k < len(requests):
                lines.append((requests[k], name, arguments))
    # The cookbook's first three lines lead, the third with its twice-encoded arguments.
    first = ["Let's get the drone in the air, can you make it take off", "Can you lift the drone to 100 feet off the ground",
             "Can you safely bring the drone down to the ground here?"]
    lead = [next(x for x in lines if x[0] == request) for request in first]
    rest = [x for x in lines if x not in lead]
    out = [line(*x, double_encoded=(i == 2)) for i, x in enumerate(lead + rest)]
    assert len(out) == 100, len(out)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "drone-cookbook.jsonl")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for o in out:
            f.write(json.dumps(o) + "\n")
    print(f"wrote {len(out)} lines to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
