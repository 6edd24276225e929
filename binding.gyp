{
  "targets": [
    {
      "target_name": "strata_native",
      "sources": ["native/addon.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
