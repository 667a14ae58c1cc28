"""``http:``: files from an HTTP(S) origin, streamed or through a disk cache."""
