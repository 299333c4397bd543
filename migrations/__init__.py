"""Schema migrations; `python -m migrations` applies every pending one."""
