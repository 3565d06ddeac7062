# Empty compiler generated dependencies file for troupe_model.
# This may be replaced when dependencies are built.
