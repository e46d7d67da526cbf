"""A handler file that fails while it is imported, so its workers never start."""

raise RuntimeError("this handler cannot be imported")
