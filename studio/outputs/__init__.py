"""Outputs: the output folder (folder.py), PNG metadata written and read (metadata.py), PNG Info
for any tool's pictures (pnginfo.py) and the searchable history index (index.py). Decoding what
users send is studio/inputs.py."""
