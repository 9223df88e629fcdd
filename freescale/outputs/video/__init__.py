"""Video files with PyAV: probing and decoding any input, encoding MP4/MOV/MKV or frame patterns with the
input's timing, colour, rotation and audio carried over."""
