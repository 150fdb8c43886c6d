"""The bundled demo: its project, its embedded server and the guided tour."""
