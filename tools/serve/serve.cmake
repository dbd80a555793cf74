# focuspatch-serve: HTTP with cpp-httplib, gRPC with grpc++ and code generated from
# grpc_predict_v2.proto. Found through pkg-config (Debian: libcpp-httplib-dev, libgrpc++-dev,
# libprotobuf-dev, protobuf-compiler, protobuf-compiler-grpc); when any is missing the program is
# left out, and configure says which.
find_package(PkgConfig QUIET)
set(FOCUSPATCH_SERVE_MISSING "")
if(PkgConfig_FOUND)
  pkg_check_modules(FOCUSPATCH_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
  pkg_check_modules(FOCUSPATCH_GRPCPP QUIET IMPORTED_TARGET grpc++ protobuf)
  if(NOT FOCUSPATCH_HTTPLIB_FOUND)
    list(APPEND FOCUSPATCH_SERVE_MISSING "cpp-httplib (libcpp-httplib-dev)")
  endif()
  if(NOT FOCUSPATCH_GRPCPP_FOUND)
    list(APPEND FOCUSPATCH_SERVE_MISSING "grpc++/protobuf (libgrpc++-dev, libprotobuf-dev)")
  endif()
else()
  list(APPEND FOCUSPATCH_SERVE_MISSING "pkg-config")
endif()
find_program(FOCUSPATCH_PROTOC protoc)
find_program(FOCUSPATCH_GRPC_CPP_PLUGIN grpc_cpp_plugin)
if(NOT FOCUSPATCH_PROTOC)
  list(APPEND FOCUSPATCH_SERVE_MISSING "protoc (protobuf-compiler)")
endif()
if(NOT FOCUSPATCH_GRPC_CPP_PLUGIN)
  list(APPEND FOCUSPATCH_SERVE_MISSING "grpc_cpp_plugin (protobuf-compiler-grpc)")
endif()

if(FOCUSPATCH_SERVE_MISSING)
  list(JOIN FOCUSPATCH_SERVE_MISSING ", " missing)
  message(STATUS "focuspatch: focuspatch-serve NOT built, missing: ${missing} (scripts/install-deps.sh installs them)")
  list(REMOVE_ITEM tool_mains serve/main.cpp)
else()
  message(STATUS "focuspatch: building focuspatch-serve (cpp-httplib ${FOCUSPATCH_HTTPLIB_VERSION}, gRPC and protobuf found)")
endif()

function(focuspatch_serve_extras target)
  set(proto ${CMAKE_CURRENT_SOURCE_DIR}/serve/grpc_predict_v2.proto)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/generated/serve)
  set(generated ${out}/grpc_predict_v2.pb.cc ${out}/grpc_predict_v2.pb.h ${out}/grpc_predict_v2.grpc.pb.cc ${out}/grpc_predict_v2.grpc.pb.h)
  add_custom_command(
    OUTPUT ${generated}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND ${FOCUSPATCH_PROTOC} -I${CMAKE_CURRENT_SOURCE_DIR}/serve --cpp_out=${out} --grpc_out=${out}
            --plugin=protoc-gen-grpc=${FOCUSPATCH_GRPC_CPP_PLUGIN} ${proto}
    DEPENDS ${proto}
    COMMENT "generating the gRPC code of grpc_predict_v2.proto")
  # The generated code is not ours: compiled without our warning flags.
  add_library(focuspatch_serve_proto STATIC ${out}/grpc_predict_v2.pb.cc ${out}/grpc_predict_v2.grpc.pb.cc)
  target_include_directories(focuspatch_serve_proto SYSTEM PUBLIC ${out})
  target_link_libraries(focuspatch_serve_proto PUBLIC PkgConfig::FOCUSPATCH_GRPCPP)
  target_link_libraries(${target} PRIVATE focuspatch_serve_proto PkgConfig::FOCUSPATCH_HTTPLIB)
  target_compile_definitions(${target} PRIVATE FOCUSPATCH_SERVE_VERSION="${PROJECT_VERSION}")
endfunction()
