-- mp_child.lua URL STORE KEY MODE — a second game-server process for
-- test_multiprocess.lua: loads KEY (Coins = 42) with the real clock and short
-- settings, then holds it, ticking, until another server takes it (MODE "hold"); or
-- exits at once without releasing, like a crash (MODE "crash"); or sets Coins = 43
-- and just ends its main chunk (MODE "exit": closing the Lua state shuts the
-- service down, which saves and releases). Prints what happened.
local url, store_name, key, mode = arg[1], arg[2], arg[3], arg[4]
local ProfileService = require("profileservice")
ProfileService.Configure{store = url, place_id = 2002, job_id = "job-child-" .. key,
                         auto_save_period = 0.3, load_repeat_delay = 0.05}
local store = ProfileService.GetProfileStore(store_name, {Coins = 0})
local profile = assert(store:LoadProfileAsync(key, "ForceLoad"), "child loaded")
profile.Data.Coins = 42
local released
profile:ListenToRelease(function(place_id, job_id)
    released = {place_id, job_id}
end)
profile:SetMetaTag("Saved", true)
profile:Save()
-- Wait until the save is in the store, so the parent sees Coins = 42.
while not profile.MetaData.MetaTagsLatest.Saved do
    ProfileService.Update()
end
if mode == "exit" then
    profile.Data.Coins = 43 -- never saved explicitly
    print("exiting")
    return
end
if mode == "crash" then
    print("crashing")
    io.stdout:flush()
    os.exit(0, false) -- no release, no shutdown: the session lock stays behind
end
local deadline = os.time() + 60
while not released and os.time() < deadline do
    ProfileService.Update()
    os.execute("sleep 0.01")
end
if released then
    print(string.format("released %s %s", tostring(released[1]), tostring(released[2])))
else
    print("never released")
end
ProfileService.Shutdown()
