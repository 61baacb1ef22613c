"""A local web editor for inversion results: `bin/editor` serves one page on 127.0.0.1.

session.py holds the editing state and the JAX work (a document of stacked edits, undo and redo,
cached rendering, region projections in the background, export; every change on one worker thread);
schema.py checks request bodies at the edge; server.py is the web server (a random token on every
request, origin and content-type checks, bounded bodies and connection times, errors as JSON
messages); static/ is the page.
"""

from .session import Document, Edit, EditorBusy, EditorSession, RegionLayer, sanitize_name

__all__ = ["Document", "Edit", "EditorBusy", "EditorSession", "RegionLayer", "sanitize_name"]
