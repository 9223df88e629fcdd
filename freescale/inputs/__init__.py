"""What renders read: the user's input videos, probed cheaply before any model loads, then decoded
frame by frame."""
