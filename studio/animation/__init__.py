"""Animation: prompts over time, camera motion and video out, with any checkpoint, offline.

    expressions  arithmetic in schedule strings, read by an allow-list (never eval)
    schedule     Deforum keyframe strings -> a value per frame; prompt keyframes -> blends
    settings     the checked settings record (and Deforum settings files imported)
    plan         every frame's values, worked out before the first frame runs
    motion       2D warps, pixel noise, the preview's test pattern
    colour       colour coherence (LAB / HSV / RGB) with a strength
    render       frames as ordinary requests through the dispatcher, saved as they finish; resume
    video        MP4 / GIF / WebP out, video frames in
    start        what the tab and /animate call: begin, reopen, run
"""
