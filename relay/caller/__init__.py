"""The caller's side of a call: the browser's leg into the relay."""
