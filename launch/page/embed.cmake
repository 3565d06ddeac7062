# cmake -DIN=launch/page/index.html -DOUT=.../page_html.h -P embed.cmake
# Writes OUT: a C++ header holding IN's bytes as one raw string literal (page_html_text), so
# the `troupe` binary serves the page with no file beside it. launch/CMakeLists.txt reruns
# this whenever IN changes.
set(delimiter "troupe_page")
file(READ "${IN}" content)
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains )${delimiter}\": pick another delimiter in ${CMAKE_CURRENT_LIST_FILE}")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by launch/page/embed.cmake: edit that file, not this one.\n"
  "#pragma once\n"
  "inline constexpr char page_html_text[] = R\"${delimiter}(${content})${delimiter}\";\n")
file(RENAME "${OUT}.tmp" "${OUT}")
