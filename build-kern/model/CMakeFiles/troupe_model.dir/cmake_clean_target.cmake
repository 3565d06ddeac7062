file(REMOVE_RECURSE
  "libtroupe_model.a"
)
