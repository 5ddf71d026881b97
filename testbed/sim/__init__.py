"""The discrete-event simulator behind `backend: sim`."""
