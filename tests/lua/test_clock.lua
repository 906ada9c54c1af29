-- test_clock.lua — the clock settings: clock = "virtual" with AdvanceClock, a Lua clock
-- function (with and without a sleep function), the system clock; and Update's work
-- in virtual time. `lua5.4 test_clock.lua URL`.
local T = require("helper")
local ProfileService = require("profileservice")
T.raises("AdvanceClock needs", ProfileService.AdvanceClock, 1)
T.raises("sleep needs a clock function", ProfileService.Configure, {sleep = print})
ProfileService.Configure{store = T.url, clock = "virtual", place_id = 1, job_id = "job-v"}
local t0 = ProfileService.AdvanceClock(0)
T.ok(math.abs(t0 - os.time()) <= 2, "the virtual clock starts at the Unix time")
T.eq(ProfileService.AdvanceClock(10), t0 + 10, "AdvanceClock returns the new time")
T.raises("must be >= 0", ProfileService.AdvanceClock, -1)
local name = T.name("Clock")
local store = ProfileService.GetProfileStore(name, {Coins = 0})

-- Auto-save in virtual time: nothing before the period, a save after it.
local p = store:LoadProfileAsync("k")
T.eq(p.MetaData.ProfileCreateTime, math.floor(t0 + 10), "timestamps use the clock")
p.Data.Coins = 1
local saved_at = p.MetaData.LastUpdate
for _ = 1, 100 do ProfileService.Update() end
T.eq(p.MetaData.LastUpdate, saved_at, "no save before the auto-save period")
ProfileService.AdvanceClock(31)
local deadline = os.time() + 20
while p.MetaData.LastUpdate == saved_at do
    ProfileService.Update()
    assert(os.time() < deadline, "auto-save never happened")
end
T.eq(p.MetaData.LastUpdate, math.floor(t0 + 41), "auto-saved at virtual t0 + 41")

-- A blocking force-load against a stuck server takes ~63 virtual seconds and no real
-- time: the library's waits advance the virtual clock.
local Stuck = assert(package.loadlib(package.searchpath("profileservice", package.cpath),
                                     "luaopen_profileservice"))()
Stuck.Configure{store = T.url, clock = "virtual", place_id = 2, job_id = "job-stuck"}
Stuck.GetProfileStore(name, {Coins = 0}):LoadProfileAsync("contested")
local before, real = ProfileService.AdvanceClock(0), os.time()
local taken = store:LoadProfileAsync("contested", "ForceLoad")
T.ok(taken, "stolen")
local waited = ProfileService.AdvanceClock(0) - before
T.ok(waited >= 8 * 7 and waited < 8 * 7 + 20, "about 63 virtual seconds, got " .. waited)
T.ok(os.time() - real <= 2, "in no real time")
taken:Release()
p:Release()
ProfileService.Shutdown()

-- A Lua clock function: read at each Update and blocking call; `sleep` lets virtual
-- time pass during blocking waits.
-- (Near the real time: a LastUpdate far from a server's clock counts as a dead lock.)
local now, slept = os.time() + 0.25, 0
local start = now
local Fn = assert(package.loadlib(package.searchpath("profileservice", package.cpath),
                                  "luaopen_profileservice"))()
Fn.Configure{store = T.url, place_id = 3, job_id = "job-fn",
             clock = function() return now end,
             sleep = function(seconds) slept = slept + seconds; now = now + seconds end}
local fstore = Fn.GetProfileStore(name, {Coins = 0})
local q = fstore:LoadProfileAsync("fn")
T.eq(q.MetaData.ProfileCreateTime, math.floor(start), "the clock function's time")
Stuck.GetProfileStore(name, {Coins = 0}):LoadProfileAsync("held")
local calls = 0
T.eq(fstore:LoadProfileAsync("held", function()
    calls = calls + 1
    return calls < 3 and "Repeat" or "Cancel"
end), nil, "Cancel")
T.ok(slept >= 14, "Repeat waits went through the sleep function")
q:Release()
Fn.Shutdown()

-- A clock function that fails is reported; the last good time stays.
local Broken = assert(package.loadlib(package.searchpath("profileservice", package.cpath),
                                      "luaopen_profileservice"))()
local broken_now = os.time() + 100.0
local good_time = broken_now
Broken.Configure{store = T.url, place_id = 4, job_id = "job-broken",
                 clock = function() return broken_now end}
local bstore = Broken.GetProfileStore(name, {Coins = 0})
broken_now = "soon"
local r = bstore:LoadProfileAsync("broken-clock")
T.eq(r.MetaData.ProfileCreateTime, math.floor(good_time), "the last good time")
r:Release()
Broken.Shutdown()

-- The system clock (the default).
local Sys = assert(package.loadlib(package.searchpath("profileservice", package.cpath),
                                   "luaopen_profileservice"))()
Sys.Configure{store = T.url, place_id = 5, job_id = "job-sys"}
local s = Sys.GetProfileStore(name, {Coins = 0}):LoadProfileAsync("sys")
T.ok(math.abs(s.MetaData.ProfileCreateTime - os.time()) <= 2, "system time")
s:Release()
Sys.Shutdown()
T.done()
