{
  "targets": [
    {
      # The preloaded shim: a plain C shared library, no Node symbols.
      "target_name": "libtsmirror",
      "type": "shared_library",
      "product_name": "libtsmirror",
      "product_extension": "so",
      "sources": [
        "native/shim/init.c",
        "native/shim/log.c",
        "native/shim/fdtable.c",
        "native/shim/channel.c",
        "native/shim/msgpack.c",
        "native/shim/replies.c",
        "native/shim/proto.c",
        "native/shim/addr.c",
        "native/shim/connect.c",
        "native/shim/fds.c",
        "native/shim/udp.c",
        "native/shim/getaddrinfo.c",
        "native/shim/res.c",
        "native/shim/hostent.c",
        "native/shim/exec.c",
        "native/shim/exec_env.c",
        "native/shim/exec_supervisor.c",
        "native/shim/program.c",
        "native/shim/pathrules.c",
        "native/shim/fsproto.c",
        "native/shim/rfile.c",
        "native/shim/files_open.c",
        "native/shim/files_stdio.c",
        "native/shim/files_stat.c",
        "native/shim/files_paths.c",
        "native/shim/files_change.c",
        "native/shim/files_temp.c",
        "native/shim/dirs.c",
        "native/shim/listen.c",
        "native/shim/unseen.c"
      ],
      "cflags": ["-std=gnu11", "-O2", "-fvisibility=hidden", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter", "-ftls-model=initial-exec"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-Wl,--no-undefined", "-Wl,-z,now"],
      "libraries": ["-ldl", "-lpthread"]
    },
    {
      # The program's launcher: a parent-death signal, then exec (native/launcher/launch.c).
      "target_name": "tsmirror-launch",
      "type": "executable",
      "sources": ["native/launcher/launch.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
    },
    {
      # The seccomp supervisor: runs static and Go programs with their notified system
      # calls answered for the session (native/supervisor). Links the shim's wire code.
      "target_name": "tsmirror-supervise",
      "type": "executable",
      "sources": [
        "native/supervisor/main.c",
        "native/supervisor/detached.c",
        "native/supervisor/filter.c",
        "native/supervisor/notify.c",
        "native/supervisor/compat.c",
        "native/supervisor/sockets.c",
        "native/supervisor/connect.c",
        "native/supervisor/udp.c",
        "native/supervisor/udprecv.c",
        "native/supervisor/udpwindow.c",
        "native/supervisor/files.c",
        "native/supervisor/files_open.c",
        "native/supervisor/files_stat.c",
        "native/supervisor/files_dirs.c",
        "native/supervisor/files_change.c",
        "native/supervisor/files_writeback.c",
        "native/supervisor/lazy.c",
        "native/supervisor/listen.c",
        "native/supervisor/accept.c",
        "native/supervisor/listen_sweep.c",
        "native/shim/addr.c",
        "native/shim/msgpack.c",
        "native/shim/replies.c",
        "native/shim/proto.c",
        "native/shim/fsproto.c",
        "native/shim/channel.c",
        "native/shim/pathrules.c",
        "native/shim/program.c"
      ],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-ldl", "-lpthread"]
    },
    {
      # The node-addon-api addon: what Node cannot do itself.
      "target_name": "tsmirror_addon",
      "sources": ["native/addon/addon.cc", "native/addon/spawn.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-fexceptions"]
    }
  ]
}
