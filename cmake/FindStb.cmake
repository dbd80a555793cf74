# stb_image comes as Debian's libstb (headers in <stb/...> plus a compiled libstb.so holding the
# implementations). We wrap it in an INTERFACE target so the header-only library can depend on it
# both in the build tree and after installation.
if(NOT TARGET focuspatch_stb)
  find_path(FOCUSPATCH_STB_INCLUDE_DIR stb/stb_image.h)
  find_library(FOCUSPATCH_STB_LIBRARY NAMES stb)
  if(NOT FOCUSPATCH_STB_INCLUDE_DIR OR NOT FOCUSPATCH_STB_LIBRARY)
    message(FATAL_ERROR "focuspatch needs stb_image (Debian: apt-get install libstb-dev)")
  endif()
  add_library(focuspatch_stb INTERFACE)
  # Absolute paths would leak this machine into the export set; keep the found values instead.
  target_include_directories(focuspatch_stb INTERFACE
    $<BUILD_INTERFACE:${FOCUSPATCH_STB_INCLUDE_DIR}> $<INSTALL_INTERFACE:${FOCUSPATCH_STB_INCLUDE_DIR}>)
  target_link_libraries(focuspatch_stb INTERFACE ${FOCUSPATCH_STB_LIBRARY})
endif()
