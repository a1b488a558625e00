"""Pure model of teleconsult: no I/O."""
