"""Outputs: the output folder (folder.py), PNG metadata written and read (metadata.py), and
decoding images that users send (images.py)."""
