// What the addon's source files share: each exported function that lives outside addon.cc.
#pragma once
#include <napi.h>

namespace tsm {

// spawnCapture(argv, input, timeoutMs): native/addon/spawn.cc.
Napi::Value SpawnCapture(const Napi::CallbackInfo& info);

}  // namespace tsm
