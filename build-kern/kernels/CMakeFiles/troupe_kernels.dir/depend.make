# Empty dependencies file for troupe_kernels.
# This may be replaced when dependencies are built.
