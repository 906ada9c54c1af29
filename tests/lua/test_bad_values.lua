-- test_bad_values.lua — Lua tables ⇄ stored JSON as Roblox's DataStore does, and
-- values the store cannot hold: Save() raises naming the path, an auto-save reports it
-- on IssueSignal, and nothing stored changes. `lua5.4 test_bad_values.lua URL`.
local T = require("helper")
local ProfileService = require("profileservice")
T.server({place_id = 1, job_id = "job-values"}, ProfileService)
local Viewer = T.server({place_id = 2, job_id = "job-viewer"})
local rec = T.record(ProfileService)
local name = T.name("Values")
local store = ProfileService.GetProfileStore(name, {Coins = 0})
local viewer = Viewer.GetProfileStore(name, {Coins = 0})

local function stored(key)
    return viewer:ViewProfileAsync(key)
end

-- ---- the mapping --------------------------------------------------------------------

local profile = store:LoadProfileAsync("Mapping")
profile.Data = {
    Int = 3, Float = 2.5, WholeFloat = 3.0, Big = math.maxinteger, Neg = -7,
    Text = "héllo \0 world", Yes = true, No = false,
    List = {1, "two", {3}}, Nested = {A = {B = {C = "deep"}}},
    EmptyInside = {}, ["key with spaces"] = 1, [""] = "empty key",
}
profile:SetMetaTag("Tag", {1, 2, 3})
profile:Save()
T.spin_until(function() return profile.MetaData.MetaTagsLatest.Tag ~= nil end, "saved")
local data = stored("Mapping").Data
T.eq(data.Int, 3, "integer")
T.eq(math.type(data.Int), "integer", "integers stay integers")
T.eq(data.Float, 2.5, "float")
T.eq(math.type(data.WholeFloat), "float", "3.0 stays a float")
T.eq(data.Big, math.maxinteger, "64-bit integers")
T.eq(data.Neg, -7, "negative")
T.eq(data.Text, "héllo \0 world", "UTF-8 and NUL bytes")
T.eq(data.Yes, true, "true")
T.eq(data.No, false, "false")
T.ok(T.same(data.List, {1, "two", {3}}), "sequences are arrays")
T.eq(data.Nested.A.B.C, "deep", "nested objects")
T.ok(T.same(data.EmptyInside, {}), "empty tables")
T.eq(data["key with spaces"], 1, "any string key")
T.eq(data[""], "empty key", "the empty key")
T.ok(T.same(stored("Mapping").MetaData.MetaTags.Tag, {1, 2, 3}), "meta tag values")
-- An empty Data is an object, so the profile stays valid.
profile.Data = {}
profile:Save()
T.spin_until(function() return stored("Mapping").Data.Int == nil end, "empty Data saved")
T.ok(T.same(stored("Mapping").Data, {}), "empty Data")
profile:Release()

-- ---- Save() raises, naming the path; nothing is stored ---------------------------------

profile = store:LoadProfileAsync("Bad")
profile.Data.Coins = 10
profile.Data.Inventory = {"sword", "shield"}
profile:Save()
T.spin_until(function() return stored("Bad").Data.Coins == 10 end, "good data saved")
local before = stored("Bad")

local cases = {
    {function(d) d.Inventory[3] = print end, "Data.Inventory[3] is a function"},
    {function(d) d.Pos = {x = 0 / 0} end, "Data.Pos.x is NaN"},
    {function(d) d.Big = math.huge end, "Data.Big is infinite"},
    {function(d) d.Small = -math.huge end, "Data.Small is negative infinite"},
    {function(d)
        local t = {}
        t.self = t
        d.Loop = t
    end, "Data.Loop.self is a cycle: it is the table Data.Loop again"},
    {function(d) d.Mixed = {1, 2, x = 3} end, "Data.Mixed mixes number keys and string keys"},
    {function(d) d.Sparse = {[1] = 1, [3] = 3} end,
     "Data.Sparse is a sparse array (index 3, but 2 entries)"},
    {function(d) d.Zero = {[0] = "a"} end, "Data.Zero has the index 0; arrays start at 1"},
    {function(d) d.Keys = {[true] = 1} end, "Data.Keys has a boolean key"},
    {function(d) d.Keys = {[{}] = 1} end, "Data.Keys has a table key"},
    {function(d) d.Float = {[1.5] = 1} end, "Data.Float has a non-integer number key (1.5)"},
    {function(d) d.File = io.stdout end, "Data.File is a userdata"},
    {function(d) d.Co = coroutine.create(print) end, "Data.Co is a thread"},
    {function(d) d["key with space"] = {print} end,
     "Data[\"key with space\"][1] is a function"},
    {function(d) d.Name = "\xff\xfe" end, "Data.Name is a string that is not valid UTF-8"},
    {function(d) d[1] = 5 end, "Data mixes number keys and string keys"},
}
for _, case in ipairs(cases) do
    local good = profile.Data
    local copy = {Coins = good.Coins, Inventory = {table.unpack(good.Inventory)}}
    case[1](copy)
    profile.Data = copy
    T.raises(case[2], profile.Save, profile)
    profile.Data = good
end
-- Data itself: sequences and non-tables are refused.
profile.Data = {1, 2}
T.raises("Data is a sequence; it must be a table with string keys", profile.Save, profile)
profile.Data = "text"
T.raises("Profile.Data is a string, not a table", profile.Save, profile)
profile.Data = before.Data
profile.MetaData.MetaTags.F = print
T.raises("MetaData.MetaTags.F is a function", profile.Save, profile)
profile.MetaData.MetaTags.F = nil
-- Shared (non-cyclic) tables are fine: stored twice.
local shared = {1, 2}
profile.Data.A, profile.Data.B = shared, shared
profile:Save()
T.spin_until(function() return stored("Bad").Data.A ~= nil end, "shared tables saved")
T.ok(T.same(stored("Bad").Data.B, {1, 2}), "shared table stored twice")
profile.Data.A, profile.Data.B = nil, nil
profile:Save()
T.spin_until(function() return stored("Bad").Data.A == nil end, "shared tables removed")
before = stored("Bad")

-- ---- an auto-save with a bad value: IssueSignal, the store unchanged --------------------

local issues = #rec.issues
profile.Data.Inventory[3] = function() end
T.run_until(function() return #rec.issues > issues end, 1, 100, "IssueSignal on auto-save")
local issue = rec.issues[#rec.issues]
T.ok(issue.message:find("Data.Inventory[3] is a function", 1, true), "issue names the path")
T.eq(issue.store, name, "issue store")
T.eq(issue.key, "Bad", "issue key")
local after = stored("Bad")
T.ok(T.same(after.Data, before.Data), "stored Data unchanged")
T.eq(after.MetaData.LastUpdate, before.MetaData.LastUpdate, "nothing was written")
T.ok(profile:IsActive(), "the profile is still ours")

-- Release with the bad value: the final save is refused (and retried) until the data
-- is fixed; then it goes through.
issues = #rec.issues
profile:Release()
T.ok(#rec.issues > issues, "the release save reported the bad value")
T.ok(stored("Bad").MetaData.ActiveSession ~= nil, "still locked in the store")
profile.Data.Inventory[3] = "bow"
T.run_until(function() return stored("Bad").MetaData.ActiveSession == nil end, 1, 60,
            "the retried release save")
T.ok(T.same(stored("Bad").Data.Inventory, {"sword", "shield", "bow"}), "fixed data saved")

-- Shutdown with a bad value still ends: the last good data is released.
local last = store:LoadProfileAsync("Last")
last.Data.Coins = 5
last:Save()
T.spin_until(function() return stored("Last").Data.Coins == 5 end, "saved")
last.Data.Coins = print
issues = #rec.issues
ProfileService.Shutdown()
T.ok(#rec.issues > issues, "reported")
T.ok(rec.issues[#rec.issues].message:find("released with the last data", 1, true),
     "the shutdown message")
T.eq(stored("Last").MetaData.ActiveSession, nil, "released at shutdown")
T.eq(stored("Last").Data.Coins, 5, "with the last good data")
T.done()
