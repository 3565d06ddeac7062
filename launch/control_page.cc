// The operators' page (launch/page/index.html), embedded at build time by
// launch/page/embed.cmake into a header in the build directory.
#include "launch/control.h"
#include "launch/page_html.h"

namespace troupe::launch {

std::string_view control_page_html() {
  return {page_html_text, sizeof page_html_text - 1};
}

}  // namespace troupe::launch
