{
  "targets": [
    {
      "target_name": "libdeflate",
      "type": "static_library",
      "include_dirs": [
        "native/vendor/libdeflate"
      ],
      "sources": [
        "native/vendor/libdeflate/lib/adler32.c",
        "native/vendor/libdeflate/lib/deflate_compress.c",
        "native/vendor/libdeflate/lib/deflate_decompress.c",
        "native/vendor/libdeflate/lib/utils.c",
        "native/vendor/libdeflate/lib/zlib_compress.c",
        "native/vendor/libdeflate/lib/zlib_decompress.c",
        "native/vendor/libdeflate/lib/x86/cpu_features.c",
        "native/vendor/libdeflate/lib/arm/cpu_features.c"
      ],
      "cflags": [
        "-O2",
        "-fomit-frame-pointer",
        "-std=c99",
        "-fvisibility=hidden",
        "-D_ANSI_SOURCE",
        "-Wno-sign-compare"
      ]
    },
    {
      "target_name": "liblz4",
      "type": "static_library",
      "sources": [
        "native/vendor/lz4/lz4.c"
      ],
      "defines": [
        "LZ4_MEMORY_USAGE=16"
      ],
      "direct_dependent_settings": {
        "defines": [
          "LZ4_MEMORY_USAGE=16"
        ]
      },
      "cflags": [
        "-O3",
        "-fvisibility=hidden"
      ]
    },
    {
      "target_name": "strata_native",
      "dependencies": [
        "libdeflate",
        "liblz4"
      ],
      "sources": [
        "native/addon.c",
        "native/deflate.c",
        "native/compressors.c",
        "native/extract.c",
        "native/files.c",
        "native/sha256.c",
        "native/instance.c",
        "native/lz4.c",
        "native/readahead.c"
      ],
      "cflags": [
        "-O2",
        "-Wall",
        "-Wextra"
      ]
    }
  ]
}
