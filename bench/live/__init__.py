"""Live exams: glass-to-glass latency, frame rate and server CPU per viewer, against bare aiortc."""
