"""ControlNet: control maps, the model files and their units in the engine's UNet calls."""
