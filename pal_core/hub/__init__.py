"""Model files: our format, every format a user may have, the catalogue, installing and downloading."""
