"""Video files with PyAV: encoding MP4/MOV/MKV or frame patterns with the input's timing, colour, rotation and
audio carried over (inputs are read by freescale.inputs)."""
