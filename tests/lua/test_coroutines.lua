-- test_coroutines.lua — "This method will yield": fifty player coroutines load, play
-- and release while another coroutine waits on a force-load from a stuck server; the
-- players keep running every tick. `lua5.4 test_coroutines.lua URL`.
local T = require("helper")
local ProfileService = require("profileservice")
T.server({place_id = 1, job_id = "job-game"}, ProfileService)
local name = T.name("Coroutines")
local template = {Coins = 0, Rounds = 0}
local store = ProfileService.GetProfileStore(name, template)

-- A server that took "Contested" and then hangs: it never ticks again.
local Stuck = T.server({place_id = 2, job_id = "job-stuck"})
table.remove(T.instances) -- T.tick must not tick it
Stuck.GetProfileStore(name, template):LoadProfileAsync("Contested", "ForceLoad")

local PLAYERS, ROUNDS = 50, 20
local progress_in_tick = 0
local loaded, finished = 0, 0
local players = {}
for i = 1, PLAYERS do
    players[i] = coroutine.create(function()
        local profile = store:LoadProfileAsync("Player_" .. i, "ForceLoad")
        assert(profile and profile:IsActive(), "player " .. i .. " loaded")
        loaded = loaded + 1
        for _ = 1, ROUNDS do
            profile.Data.Coins = profile.Data.Coins + i
            profile.Data.Rounds = profile.Data.Rounds + 1
            progress_in_tick = progress_in_tick + 1
            coroutine.yield() -- until the game's next tick
        end
        profile:Release()
        finished = finished + 1
    end)
end

local forced, forced_at
local started_at = T.now
local forcer = coroutine.create(function()
    forced = store:LoadProfileAsync("Contested", "ForceLoad")
    forced_at = T.now
end)
assert(coroutine.resume(forcer))
T.eq(coroutine.status(forcer), "suspended", "the force-load yielded")

-- The game loop: resume every player (one waiting inside LoadProfileAsync just waits
-- on), then ProfileService.Update() resumes the coroutines whose call finished.
local ticks, ticks_waiting, ticks_with_progress, idle_ticks = 0, 0, 0, 0
while coroutine.status(forcer) ~= "dead" or finished < PLAYERS do
    progress_in_tick = 0
    for _, co in ipairs(players) do
        if coroutine.status(co) == "suspended" then
            local ok, err = coroutine.resume(co)
            assert(ok, err)
        end
    end
    T.tick(1)
    ticks = ticks + 1
    if coroutine.status(forcer) ~= "dead" then
        ticks_waiting = ticks_waiting + 1
        if progress_in_tick > 0 then
            ticks_with_progress = ticks_with_progress + 1
        elseif loaded == PLAYERS and finished < PLAYERS then
            idle_ticks = idle_ticks + 1 -- players ready but nobody moved: a freeze
        end
    end
    assert(ticks < 5000, "the game loop never ended")
end

print(string.format("ticks %d, force-load waited %d ticks (%.0f s), players progressed " ..
                    "in %d of them", ticks, ticks_waiting, forced_at - started_at,
                    ticks_with_progress))
T.eq(loaded, PLAYERS, "every player loaded")
T.eq(finished, PLAYERS, "every player played and released")
T.ok(forced and forced:IsActive(), "the force-load got the profile")
T.ok(forced_at - started_at >= 8 * 7, "stolen after the force-load steps (~63 s)")
T.eq(idle_ticks, 0, "no tick froze the players while the force-load waited")
T.ok(ticks_with_progress >= ROUNDS, "players progressed tick after tick meanwhile")
forced:Release()

-- Every player's rounds were saved by its release.
ProfileService.Shutdown()
local viewer = T.server({place_id = 3, job_id = "job-viewer"})
local view_store = viewer.GetProfileStore(name, template)
for i = 1, PLAYERS, 7 do
    local v = view_store:ViewProfileAsync("Player_" .. i)
    T.eq(v.Data.Rounds, ROUNDS, "player " .. i .. " rounds saved")
    T.eq(v.Data.Coins, ROUNDS * i, "player " .. i .. " coins saved")
    T.eq(v.MetaData.ActiveSession, nil, "player " .. i .. " released")
end
T.done()
