file(REMOVE_RECURSE
  "libtroupe_kernels.a"
)
