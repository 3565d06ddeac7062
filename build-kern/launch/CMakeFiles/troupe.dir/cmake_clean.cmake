file(REMOVE_RECURSE
  "../troupe"
  "../troupe.pdb"
  "CMakeFiles/troupe.dir/cmd_dev.cc.o"
  "CMakeFiles/troupe.dir/cmd_dev.cc.o.d"
  "CMakeFiles/troupe.dir/cmd_eval.cc.o"
  "CMakeFiles/troupe.dir/cmd_eval.cc.o.d"
  "CMakeFiles/troupe.dir/cmd_export.cc.o"
  "CMakeFiles/troupe.dir/cmd_export.cc.o.d"
  "CMakeFiles/troupe.dir/cmd_train.cc.o"
  "CMakeFiles/troupe.dir/cmd_train.cc.o.d"
  "CMakeFiles/troupe.dir/main.cc.o"
  "CMakeFiles/troupe.dir/main.cc.o.d"
)

# Per-language clean rules from dependency scanning.
foreach(lang CXX)
  include(CMakeFiles/troupe.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
