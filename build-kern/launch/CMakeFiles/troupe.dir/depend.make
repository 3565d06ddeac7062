# Empty dependencies file for troupe.
# This may be replaced when dependencies are built.
