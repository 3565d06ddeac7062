file(REMOVE_RECURSE
  "CMakeFiles/troupe_model.dir/ffn.cc.o"
  "CMakeFiles/troupe_model.dir/ffn.cc.o.d"
  "CMakeFiles/troupe_model.dir/mhc.cc.o"
  "CMakeFiles/troupe_model.dir/mhc.cc.o.d"
  "CMakeFiles/troupe_model.dir/mla.cc.o"
  "CMakeFiles/troupe_model.dir/mla.cc.o.d"
  "CMakeFiles/troupe_model.dir/model.cc.o"
  "CMakeFiles/troupe_model.dir/model.cc.o.d"
  "CMakeFiles/troupe_model.dir/optim.cc.o"
  "CMakeFiles/troupe_model.dir/optim.cc.o.d"
  "CMakeFiles/troupe_model.dir/params.cc.o"
  "CMakeFiles/troupe_model.dir/params.cc.o.d"
  "CMakeFiles/troupe_model.dir/trainer.cc.o"
  "CMakeFiles/troupe_model.dir/trainer.cc.o.d"
  "CMakeFiles/troupe_model.dir/weights_io.cc.o"
  "CMakeFiles/troupe_model.dir/weights_io.cc.o.d"
  "libtroupe_model.a"
  "libtroupe_model.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang CXX)
  include(CMakeFiles/troupe_model.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
