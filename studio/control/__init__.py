"""Control where things go: ControlNet and T2I-Adapter units (the request's `control` field,
studio/requests/control.py).

    preprocessors.py  a picture -> the map a control model takes (canny, scribble, line art, tile...)
    maps.py           a unit's map at the picture's size (resolution, resize modes, pixel perfect)
    models.py         control models from models/controlnet: diffusers folders and single files
    units.py          a request's units made ready for the engine's prepare and condition stages
    guidance.py       the units acting on the UNet during one pipeline call (a forward pre-hook)
"""
