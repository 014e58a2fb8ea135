"""Animation: prompt and camera schedules (data, read by an allow-list, never eval), frames as
img2img requests through the dispatcher, video writing. Not built yet: issue 23."""
