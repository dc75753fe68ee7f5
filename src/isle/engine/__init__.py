"""isle.engine: containers and volumes as user-facing objects (see engine.Engine)."""
