"""Live mode: latest-wins previews from a few-step model through the dispatcher's live lane.
Not built yet: issue 22."""
