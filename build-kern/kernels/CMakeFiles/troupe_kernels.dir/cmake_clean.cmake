file(REMOVE_RECURSE
  "CMakeFiles/troupe_kernels.dir/cpu/gemm.cc.o"
  "CMakeFiles/troupe_kernels.dir/cpu/gemm.cc.o.d"
  "CMakeFiles/troupe_kernels.dir/cpu/ops.cc.o"
  "CMakeFiles/troupe_kernels.dir/cpu/ops.cc.o.d"
  "libtroupe_kernels.a"
  "libtroupe_kernels.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang CXX)
  include(CMakeFiles/troupe_kernels.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
