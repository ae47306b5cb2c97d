"""File formats (hloc-compatible) and safe IO."""
