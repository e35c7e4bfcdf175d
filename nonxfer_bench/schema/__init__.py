"""The suite and zoo file schema: pure pydantic models and file reading, no registry imports."""
