// stb_image's implementation, compiled with the fuzz targets' instrumentation (see CMakeLists.txt).
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
