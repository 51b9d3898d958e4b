//! Client commands (shoal get, ...) and their output.
