"""Named datastores of pickled Python objects: save, load, describe, delete, grant."""
