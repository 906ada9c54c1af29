-- test_api.lua — every member of the seed API (shared/API.md) and the binding's
-- extras, in virtual time: `lua5.4 test_api.lua URL`.
local T = require("helper")
local ProfileService = require("profileservice")

-- ---- before first use: ServiceLocked, signals, Configure ------------------------------

T.eq(ProfileService.ServiceLocked, false, "ServiceLocked before first use")
T.eq(type(ProfileService.ServiceLocked), "boolean", "ServiceLocked type")
local rec = T.record(ProfileService)
T.raises("unknown setting \"auto_save\"", ProfileService.Configure, {auto_save = 1})
T.raises("auto_save_period must be a number > 0", ProfileService.Configure,
         {auto_save_period = -1})
T.raises("clock must be a function", ProfileService.Configure, {clock = 5})
T.raises("place_id must be an integer", ProfileService.Configure, {place_id = 1.5})
T.server({place_id = 1001, job_id = "job-api", write_cooldown = 0}, ProfileService)
-- The second server ("another Roblox server") shares the store and the clock.
local Other = T.server({place_id = 2002, job_id = "job-other"})
local other_rec = T.record(Other)

-- ---- GetProfileStore -------------------------------------------------------------------

local template = {Coins = 0, Items = {}, Settings = {Music = true, Volume = 0.5}}
local name = T.name("Api")
T.raises("bad argument #2", ProfileService.GetProfileStore, name, 5)
local store = ProfileService.GetProfileStore(name, template)
T.eq(tostring(store), "ProfileStore (" .. name .. ")", "store tostring")
T.eq(ProfileService.GetProfileStore(name, template), store, "same store for same name")
T.raises("different template", ProfileService.GetProfileStore, name, {Other = 1})
T.raises("profile_template.F is a function", ProfileService.GetProfileStore, "X",
         {F = print})
T.raises("must be called before the first use", ProfileService.Configure, {place_id = 1})
local other_store = Other.GetProfileStore(name, template)

-- ---- LoadProfileAsync: a new profile -------------------------------------------------------

T.raises("not_released_handler must be", store.LoadProfileAsync, store, "k", "Repeat")
T.raises("not_released_handler must be", store.LoadProfileAsync, store, "k", 5)
T.raises("profile key is empty", store.LoadProfileAsync, store, "", "ForceLoad")
local created_at = T.now
local profile = store:LoadProfileAsync("Player_1", "ForceLoad")
T.ok(profile, "loaded")
T.ok(profile:IsActive(), "active after load")
T.ok(T.same(profile.Data, template), "Data is a copy of the template")
profile.Data.Coins = 5
T.eq(template.Coins, 0, "the template is deep-copied")
T.eq(math.type(profile.Data.Coins), "integer", "integers stay integers")
T.eq(profile.Data.Settings.Volume, 0.5, "reals stay reals")
local meta = profile.MetaData
T.eq(meta.ProfileCreateTime, math.floor(created_at), "ProfileCreateTime")
T.eq(meta.SessionLoadCount, 1, "SessionLoadCount")
T.ok(T.same(meta.ActiveSession, {1001, "job-api"}), "ActiveSession {place_id, job_id}")
T.ok(T.same(meta.MetaTags, {}), "MetaTags empty")
T.ok(T.same(meta.MetaTagsLatest, {}), "MetaTagsLatest empty")
T.eq(profile.MetaData, meta, "MetaData is one table")
T.eq(profile.GlobalUpdates, profile.GlobalUpdates, "GlobalUpdates is one object")
T.raises("Profile.MetaData is read-only", function() profile.MetaData = {} end)
profile.Player = "somebody" -- scripts may keep their own fields on a profile
T.eq(profile.Player, "somebody", "own fields")
T.raises("already loaded", store.LoadProfileAsync, store, "Player_1", "ForceLoad")

-- ---- MetaTags, Save, MetaTagsLatest ------------------------------------------------------

T.raises("tag_name must be a non-empty string", profile.SetMetaTag, profile, "", 1)
T.raises("MetaData.MetaTags[\"Bad\"] is a function", profile.SetMetaTag, profile, "Bad",
         print)
profile:SetMetaTag("Level", 3)
profile.MetaData.MetaTags.Direct = {1, 2} -- "You may also read / write directly"
T.eq(profile:GetMetaTag("Level"), 3, "GetMetaTag")
T.eq(profile:GetMetaTag("Missing"), nil, "GetMetaTag of a missing tag")
T.eq(profile.MetaData.MetaTagsLatest.Level, nil, "not saved yet")
profile:Save()
T.spin_until(function() return profile.MetaData.MetaTagsLatest.Level == 3 end,
             "MetaTagsLatest after Save")
T.ok(T.same(profile.MetaData.MetaTagsLatest.Direct, {1, 2}), "direct MetaTags saved")
T.ok(profile.MetaData.LastUpdate, "LastUpdate after a save")

-- Auto-save: Data reaches the store without Save() within the period.
profile.Data.Coins = 6
local saved_by_auto = false
local last = profile.MetaData.LastUpdate
T.run_until(function()
    local v = other_store:ViewProfileAsync("Player_1")
    saved_by_auto = v.Data.Coins == 6
    return saved_by_auto
end, 1, 90, "auto-save")
T.spin_until(function() return profile.MetaData.LastUpdate > last end,
             "auto-save moved LastUpdate")

-- ---- ListenToRelease, Release ---------------------------------------------------------

local released = {}
local conn = profile:ListenToRelease(function(place_id, job_id)
    released[#released + 1] = {place_id, job_id}
end)
T.eq(tostring(conn), "ScriptConnection (connected)", "connection tostring")
T.eq(conn.Connected, true, "Connected")
local dropped = profile:ListenToRelease(function() error("disconnected listener ran") end)
dropped:Disconnect()
dropped:Disconnect() -- twice is harmless
T.eq(dropped.Connected, false, "disconnected")
profile.Data.Coins = 7
profile:Release()
T.eq(profile:IsActive(), false, "inactive after Release")
T.eq(#released, 1, "release listener ran before Release returned")
T.ok(T.same(released[1], {1001, "job-api"}), "release listener gets our session")
profile:Release() -- already released: nothing happens
T.raises("no longer active", profile.SetMetaTag, profile, "Level", 4)
T.raises("no longer active", profile.Save, profile)
local late = {}
profile:ListenToRelease(function(p, j) late[#late + 1] = {p, j} end)
T.eq(#late, 1, "ListenToRelease on a released profile runs at once")
T.spin_until(function() return profile.MetaData.ActiveSession == nil end,
             "MetaData shows the release save")
T.eq(other_store:ViewProfileAsync("Player_1").MetaData.ActiveSession, nil,
     "the store shows it")

-- Load again at once: the data came back, SessionLoadCount went up.
local again = store:LoadProfileAsync("Player_1")
T.eq(again.Data.Coins, 7, "Data persisted by the release save")
T.eq(again.MetaData.SessionLoadCount, 2, "SessionLoadCount counts sessions")
T.eq(again:GetMetaTag("Level"), 3, "meta tags persisted")
T.eq(again.MetaData.ProfileCreateTime, math.floor(created_at), "create time kept")

-- ---- ViewProfileAsync ---------------------------------------------------------------------

local view = store:ViewProfileAsync("Player_1")
T.eq(view.Data.Coins, 7, "view Data")
T.ok(T.same(view.MetaData.ActiveSession, {1001, "job-api"}), "view sees the owner")
T.eq(view:IsActive(), false, "a view is never active")
T.raises("view", view.Save, view)
T.raises("view", view.SetMetaTag, view, "Level", 1)
T.raises("view", view.Release, view)
T.raises("view", view.ListenToRelease, view, function() end)
T.eq(view:GetMetaTag("Level"), 3, "GetMetaTag on a view")
local never = store:ViewProfileAsync("Never_Created")
T.ok(never, "view of a never-created key")
T.eq(never.Data, nil, "its Data is nil")
T.eq(never.MetaData, nil, "its MetaData is nil")
T.eq(never:GetMetaTag("Level"), nil, "and it has no meta tags")
T.ok(T.same(never.GlobalUpdates:GetActiveUpdates(), {}), "and no global updates")
again:Release()

-- ---- another server holds the profile ----------------------------------------------------

local held = other_store:LoadProfileAsync("Held", "ForceLoad")
held.Data.Coins = 42
held:Save()
local calls = {}
local function answer(list)
    local i = 0
    return function(place_id, game_job_id)
        i = i + 1
        calls[#calls + 1] = {place_id, game_job_id}
        return list[i]
    end
end
T.eq(store:LoadProfileAsync("Held", answer({"Cancel"})), nil, "Cancel → nil")
T.ok(T.same(calls[1], {2002, "job-other"}), "handler gets the owner's session")
calls = {}
local t0 = T.now
T.eq(store:LoadProfileAsync("Held", answer({"Repeat", "Repeat", "Cancel"})), nil,
     "Repeat, Repeat, Cancel → nil")
T.eq(#calls, 3, "the handler is asked again after each Repeat")
T.ok(T.now - t0 >= 14, "Repeat waits load_repeat_delay between tries")
T.raises("not_released_handler returned \"Maybe\"", store.LoadProfileAsync, store, "Held",
         function() return "Maybe" end)
T.raises("not_released_handler returned nil", store.LoadProfileAsync, store, "Held",
         function() end)
T.raises("not_released_handler: ", store.LoadProfileAsync, store, "Held",
         function() error("boom") end)
T.raises("cannot be called from inside a listener", store.LoadProfileAsync, store,
         "Held", function() ProfileService.Update() end)
T.ok(held:IsActive(), "nothing of that disturbed the owner")

-- ForceLoad while the owner is alive (a coroutine, both servers ticking): the owner
-- hands over on its next auto-save and its listener learns who took it.
local owner_released
held:ListenToRelease(function(place_id, job_id) owner_released = {place_id, job_id} end)
local taken
coroutine.wrap(function()
    taken = store:LoadProfileAsync("Held", answer({"ForceLoad"}))
end)()
T.run_until(function() return taken ~= nil end, 1, 200, "ForceLoad from a live owner")
T.ok(T.same(owner_released, {1001, "job-api"}), "the owner's ListenToRelease")
T.eq(held:IsActive(), false, "the owner lost it")
T.eq(taken.Data.Coins, 42, "the new owner has the old owner's data")
T.eq(taken.MetaData.SessionLoadCount, 2, "a new session")
taken:Release()

-- "Steal": takes the session at once.
local held2 = other_store:LoadProfileAsync("Held2", "ForceLoad")
local stolen = store:LoadProfileAsync("Held2", "Steal")
T.ok(stolen and stolen:IsActive(), "Steal")
local lost
held2:ListenToRelease(function(place_id) lost = place_id end)
held2:Save()
T.spin_until(function() return lost ~= nil end, "the robbed owner notices at its save")
T.eq(lost, 1001, "robbed by us")
stolen:Release()

-- ForceLoad from a stuck owner (it never ticks during our blocking call): stolen after
-- force_load_max_steps retries, about 8 × 7 s.
other_store:LoadProfileAsync("Stuck", "ForceLoad")
t0 = T.now
local unstuck = store:LoadProfileAsync("Stuck", "ForceLoad")
T.ok(unstuck, "ForceLoad steals from a stuck server")
T.ok(T.now - t0 >= 8 * 7 and T.now - t0 < 8 * 7 + 30, "after about 63 s")
unstuck:Release()

-- ---- GlobalUpdates -------------------------------------------------------------------

-- Inside update_handler: Add/Change/Clear only; a failing method fails the whole
-- call and nothing is written.
local outside
T.raises("only a loaded profile's own global updates", store.GlobalUpdateProfileAsync,
         store, "Gifts", function(global_updates)
    outside = global_updates
    global_updates:AddActiveUpdate({Gift = "lost"})
    global_updates:LockActiveUpdate(1)
end)
T.raises("update_handler that has returned", outside.AddActiveUpdate, outside, {})
T.eq(store:ViewProfileAsync("Gifts").Data, nil, "a failed call wrote nothing")
T.ok(T.same(store:ViewProfileAsync("Gifts").GlobalUpdates:GetActiveUpdates(), {}),
     "not even the add")
T.raises("update_handler: ", store.GlobalUpdateProfileAsync, store, "Gifts",
         function(global_updates)
    global_updates:AddActiveUpdate({Gift = "lost"})
    error("changed my mind")
end)
T.raises("bad argument #3", store.GlobalUpdateProfileAsync, store, "Gifts", "nope")
T.raises("update_data.F is a function", store.GlobalUpdateProfileAsync, store, "Gifts",
         function(global_updates) global_updates:AddActiveUpdate({F = print}) end)

local runs = 0
local result = store:GlobalUpdateProfileAsync("Gifts", function(global_updates)
    runs = runs + 1
    T.eq(global_updates:AddActiveUpdate({Gift = "sword"}), 1, "first update id")
    global_updates:AddActiveUpdate({Gift = "shield"})
    global_updates:AddActiveUpdate({Gift = "junk"})
    T.eq(#global_updates:GetActiveUpdates(), 3, "the handler sees its adds")
end)
T.ok(runs >= 1, "update_handler ran")
T.eq(tostring(result), "GlobalUpdates (result)", "the result")
T.ok(T.same(result:GetActiveUpdates(), {{1, {Gift = "sword"}}, {2, {Gift = "shield"}},
                                        {3, {Gift = "junk"}}}),
     "GetActiveUpdates() → {{update_id, update_data}, …}")
T.ok(T.same(result:GetLockedUpdates(), {}), "no locked updates")
T.raises("only available inside an update handler", result.AddActiveUpdate, result, {})
T.raises("only a loaded profile", result.LockActiveUpdate, result, 1)
T.raises("only a loaded profile", result.ListenToNewLockedUpdate, result, function() end)
result = store:GlobalUpdateProfileAsync("Gifts", function(global_updates)
    global_updates:ChangeActiveUpdate(2, {Gift = "shield", Count = 2})
    global_updates:ClearActiveUpdate(3)
end)
T.ok(T.same(result:GetActiveUpdates(), {{1, {Gift = "sword"}},
                                        {2, {Gift = "shield", Count = 2}}}),
     "Change and Clear")
T.raises("no global update 9", store.GlobalUpdateProfileAsync, store, "Gifts",
         function(global_updates) global_updates:ClearActiveUpdate(9) end)
-- Works for a key that was never loaded; a view sees the updates, no profile yet.
local gift_view = store:ViewProfileAsync("Gifts")
T.eq(gift_view.Data, nil, "global updates alone create no profile")
T.eq(#gift_view.GlobalUpdates:GetActiveUpdates(), 2, "the view sees them")
T.raises("only a loaded profile", gift_view.GlobalUpdates.LockActiveUpdate,
         gift_view.GlobalUpdates, 1)

-- The owner: scan at load, lock, process the locked update, clear it.
local gifted = store:LoadProfileAsync("Gifts", "ForceLoad")
local gu = gifted.GlobalUpdates
T.eq(tostring(gu), "GlobalUpdates (profile)", "Profile.GlobalUpdates")
T.raises("only available inside an update handler", gu.AddActiveUpdate, gu, {})
T.raises("only available inside an update handler", gu.ChangeActiveUpdate, gu, 1, {})
T.raises("only available inside an update handler", gu.ClearActiveUpdate, gu, 1)
T.raises("is not locked", gu.ClearLockedUpdate, gu, 1)
T.raises("no global update 77", gu.LockActiveUpdate, gu, 77)
local new_active, new_locked = {}, {}
gu:ListenToNewActiveUpdate(function(update_id, update_data)
    new_active[#new_active + 1] = {update_id, update_data}
end)
gu:ListenToNewLockedUpdate(function(update_id, update_data)
    new_locked[#new_locked + 1] = {update_id, update_data}
    gifted.Data.Items[#gifted.Data.Items + 1] = update_data.Gift
    gu:ClearLockedUpdate(update_id)
end)
for _, update in ipairs(gu:GetActiveUpdates()) do
    gu:LockActiveUpdate(update[1])
end
T.ok(T.same(gu:GetActiveUpdates(), {}), "locking hides them from GetActiveUpdates")
T.raises("already being locked", gu.LockActiveUpdate, gu, 1)
gifted:Save()
T.spin_until(function() return #new_locked == 2 end, "ListenToNewLockedUpdate")
T.eq(#new_active, 0, "locked updates are not new active ones")
T.ok(T.same(gifted.Data.Items, {"sword", "shield"}), "processed once each")
T.ok(T.same(gu:GetLockedUpdates(), {}), "cleared locally")
gifted:Save()
T.spin_until(function()
    return #store:ViewProfileAsync("Gifts").GlobalUpdates:GetLockedUpdates() == 0
end, "the clears reach the store")
-- A gift sent while the owner is online arrives with its next save.
store:GlobalUpdateProfileAsync("Gifts", function(global_updates)
    global_updates:AddActiveUpdate({Gift = "bow"})
end)
gifted:Save()
T.spin_until(function() return #new_active == 1 end, "ListenToNewActiveUpdate")
T.eq(new_active[1][1], 4, "update ids are never reused (3 was cleared)")
T.eq(new_active[1][2].Gift, "bow", "update data")
gifted:Release()
T.raises("no longer active", gu.ListenToNewActiveUpdate, gu, function() end)
T.raises("no longer active", gu.LockActiveUpdate, gu, 4)
T.eq(#gu:GetActiveUpdates(), 1, "GetActiveUpdates is always available")

-- ---- signals ---------------------------------------------------------------------------

-- IssueSignal: a save that fails. CorruptionSignal: Data that is not a table.
local broken = store:LoadProfileAsync("Broken")
broken.Data = 5
T.raises("Profile.Data is a number, not a table", broken.Save, broken)
T.eq(#rec.corruptions, 1, "CorruptionSignal from Save() with a non-table Data")
T.eq(rec.corruptions[1].store, name, "corruption store")
T.run_until(function() return #rec.issues > 0 end, 1, 60, "IssueSignal")
T.ok(rec.issues[1].message:find("Profile.Data is a number", 1, true), "issue message")
T.eq(rec.issues[1].store, name, "issue store")
T.eq(rec.issues[1].key, "Broken", "issue key")
T.ok(#rec.corruptions > 0 and rec.corruptions[1].key == "Broken", "CorruptionSignal")
-- CriticalStateSignal: five issues within 120 s, and back after quiet.
T.run_until(function() return rec.critical[1] == true end, 5, 100,
            "CriticalStateSignal(true)")
broken.Data = {Coins = 1}
T.run_until(function() return rec.critical[2] == false end, 10, 100,
            "CriticalStateSignal(false)")
broken:Release()

-- A listener that errors, or tries to yield, is reported; the service carries on.
local after = 0
local bad1 = ProfileService.IssueSignal:Connect(function() error("listener failure") end)
local bad2 = ProfileService.IssueSignal:Connect(function() coroutine.yield() end)
ProfileService.IssueSignal:Connect(function() after = after + 1 end)
local broken2 = store:LoadProfileAsync("Broken2")
broken2.Data.F = print
T.run_until(function() return after > 0 end, 1, 60, "listeners after failing ones")
bad1:Disconnect()
bad2:Disconnect()
broken2.Data.F = nil
broken2:Release()

-- A coroutine closed while it waits on a load: the profile it would have got is
-- released, not held until shutdown.
local abandoned = coroutine.create(function()
    store:LoadProfileAsync("Abandoned", "ForceLoad")
    error("never resumed")
end)
assert(coroutine.resume(abandoned))
T.ok(coroutine.close(abandoned), "closed while waiting")
T.run_until(function()
    local v = other_store:ViewProfileAsync("Abandoned")
    return v.MetaData and v.MetaData.ActiveSession == nil
end, 1, 100, "the abandoned load released")
T.ok(store:LoadProfileAsync("Abandoned", function() return "Cancel" end),
     "free for the next load at once")

-- ---- Shutdown ------------------------------------------------------------------------------

local last_one = store:LoadProfileAsync("Last")
last_one.Data.Coins = 99
local closed
last_one:ListenToRelease(function() closed = true end)
local waiting_result = "not yet"
Other.GetProfileStore(name, template):LoadProfileAsync("Blocker", "ForceLoad")
coroutine.wrap(function()
    waiting_result = store:LoadProfileAsync("Blocker", "ForceLoad")
end)()
ProfileService.Shutdown()
T.eq(ProfileService.ServiceLocked, true, "ServiceLocked after Shutdown")
T.ok(closed, "Shutdown released the profile")
T.eq(waiting_result, nil, "a coroutine waiting on a load gets nil")
T.eq(store:LoadProfileAsync("Last"), nil, "LoadProfileAsync after Shutdown")
T.eq(store:ViewProfileAsync("Last"), nil, "ViewProfileAsync after Shutdown")
T.eq(store:GlobalUpdateProfileAsync("Last", function() end), nil,
     "GlobalUpdateProfileAsync after Shutdown")
ProfileService.Shutdown() -- twice is harmless
local final = other_store:ViewProfileAsync("Last")
T.eq(final.Data.Coins, 99, "Shutdown saved the data")
T.eq(final.MetaData.ActiveSession, nil, "and released the session")
T.eq(#other_rec.issues, 0, "the other server had no issues")
T.done()
