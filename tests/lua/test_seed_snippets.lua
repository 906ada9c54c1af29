-- test_seed_snippets.lua — the seed page's own code (shared/API.md), pasted unchanged
-- where the page gives code, and its documented patterns (not_released_handler
-- answers, product purchases through MetaTags / MetaTagsLatest, gifts through
-- GlobalUpdates) written the way the page describes them. `lua5.4 … URL`.
local T = require("helper")
local ProfileService = require("profileservice")
T.server({place_id = 1, job_id = "job-seed"}, ProfileService)
local OtherServer = T.server({place_id = 2, job_id = "job-other-server"})

-- ---- IssueSignal: "Example usage", verbatim ------------------------------------------

local printed = {}
local real_print = print
print = function(...) printed[#printed + 1] = table.pack(...) end -- luacheck: ignore

ProfileService.IssueSignal:Connect(function(error_message)
  print("ProfileService experienced a DataStore error:", error_message)
end)

local ProfileStore = ProfileService.GetProfileStore(T.name("Seed"), {Coins = 0, Items = {}})
local broken = ProfileStore:LoadProfileAsync("Broken", "ForceLoad")
broken.Data.Callback = function() end -- not something a DataStore can hold
T.run_until(function() return #printed > 0 end, 1, 60, "the IssueSignal example printed")
print = real_print -- luacheck: ignore
T.eq(printed[1][1], "ProfileService experienced a DataStore error:", "printed text")
T.ok(printed[1][2]:find("Data.Callback is a function", 1, true), "error_message")
broken.Data.Callback = nil
broken:Release()

-- ---- LoadProfileAsync(profile_key, not_released_handler) -------------------------------

local OtherStore = OtherServer.GetProfileStore(T.name("Seed"), {Coins = 0, Items = {}})
local profile_key = "Player_2261"
local owner = OtherStore:LoadProfileAsync(profile_key, "ForceLoad")
owner.Data.Coins = 10

-- return "Repeat" -- ProfileService will repeat the profile loading proccess and may
-- call the release handler again
local repeats = 0
local profile = ProfileStore:LoadProfileAsync(profile_key, function(place_id, game_job_id)
    repeats = repeats + 1
    T.eq(place_id, 2, "place_id")
    T.eq(game_job_id, "job-other-server", "game_job_id")
    if repeats < 3 then
        return "Repeat"
    end
    return "Cancel"
end)
T.eq(repeats, 3, "the release handler was called again after Repeat")

-- return "Cancel" -- :LoadProfileAsync() will immediately return nil
profile = ProfileStore:LoadProfileAsync(profile_key, function(place_id, game_job_id)
    return "Cancel"
end)
T.eq(profile, nil, "Cancel: LoadProfileAsync returned nil")

-- return "ForceLoad" -- ProfileService will repeat the profile loading call while
-- trying to make the owner game server release the profile. It will "steal" the
-- profile ownership if the server doesn't release the profile in time.
local owner_listener_ran = false
owner:ListenToRelease(function() owner_listener_ran = true end) -- "recommended: :Kick()"
local done = false
coroutine.wrap(function()
    profile = ProfileStore:LoadProfileAsync(profile_key, function(place_id, game_job_id)
        return "ForceLoad"
    end)
    done = true
end)()
T.run_until(function() return done end, 1, 200, "ForceLoad")
T.ok(profile and profile:IsActive(), "ForceLoad: the profile is ours")
T.ok(owner_listener_ran, "the owner server's ListenToRelease ran")
T.eq(profile.Data.Coins, 10, "with the owner's last data")
profile:Release()

-- ---- Product purchases: MetaTags and MetaTagsLatest ------------------------------------
-- "store receiptInfo.PurchaseId values inside Profile.MetaData.MetaTags and wait for
-- them in Profile.MetaData.MetaTagsLatest. Don't forget to clear really old
-- PurchaseId's to stay under DataStore limits."

local PURCHASE_ID_CACHE_SIZE = 3

local function find(list, value)
    for i, v in ipairs(list) do
        if v == value then return i end
    end
    return nil
end

-- Runs in the purchase's own coroutine; returns "PurchaseGranted" once the grant is
-- saved, "NotProcessedYet" when the profile is gone.
local function ProcessReceipt(player_profile, receiptInfo, grant_product)
    local meta_data = player_profile.MetaData
    local purchase_ids = meta_data.MetaTags.ProfilePurchaseIds
    if purchase_ids == nil then
        purchase_ids = {}
        meta_data.MetaTags.ProfilePurchaseIds = purchase_ids
    end
    if find(purchase_ids, receiptInfo.PurchaseId) == nil then
        while #purchase_ids >= PURCHASE_ID_CACHE_SIZE do
            table.remove(purchase_ids, 1)
        end
        table.insert(purchase_ids, receiptInfo.PurchaseId)
        grant_product(player_profile)
    end
    player_profile:Save() -- "to speed up save validation processes"
    while player_profile:IsActive() do
        local saved = meta_data.MetaTagsLatest.ProfilePurchaseIds
        if saved ~= nil and find(saved, receiptInfo.PurchaseId) ~= nil then
            return "PurchaseGranted"
        end
        coroutine.yield() -- wait()
    end
    return "NotProcessedYet"
end

local buyer = ProfileStore:LoadProfileAsync("Buyer", "ForceLoad")
local function grant_coins(p) p.Data.Coins = p.Data.Coins + 100 end
local decisions = {}
-- Two waves of purchases; Roblox may call ProcessReceipt twice for one purchase: "P3"
-- comes twice. The second wave pushes P1 out of the cache of three.
local function purchase_wave(ids)
    local purchases = {}
    for i, id in ipairs(ids) do
        purchases[i] = coroutine.create(function()
            local decision = ProcessReceipt(buyer, {PurchaseId = id}, grant_coins)
            decisions[#decisions + 1] = decision
        end)
    end
    T.run_until(function()
        local pending = false
        for _, co in ipairs(purchases) do
            if coroutine.status(co) == "suspended" then
                assert(coroutine.resume(co))
                pending = true
            end
        end
        return not pending
    end, 0.5, 400, "purchases granted")
end
purchase_wave({"P1", "P2"})
purchase_wave({"P3", "P4", "P3"})
T.eq(#decisions, 5, "five decisions")
for i = 1, 5 do T.eq(decisions[i], "PurchaseGranted", "decision " .. i) end
T.eq(buyer.Data.Coins, 400, "four purchases granted once each (P3 twice)")
T.ok(T.same(buyer.MetaData.MetaTags.ProfilePurchaseIds, {"P2", "P3", "P4"}),
     "old PurchaseIds cleared")
buyer:Release()
local saved_buyer = OtherStore:ViewProfileAsync("Buyer")
T.spin_until(function()
    saved_buyer = OtherStore:ViewProfileAsync("Buyer")
    return saved_buyer.MetaData.ActiveSession == nil
end, "buyer released")
T.eq(saved_buyer.Data.Coins, 400, "granted coins saved")

-- ---- GlobalUpdates: gifts ---------------------------------------------------------------
-- "Normally, when the profile is active on a Roblox server, you should always progress
-- all Active updates to the Locked state"; "Locked updates are ready to be processed
-- (e.g., add gift to player inventory)"; "Must always call ClearLockedUpdate(update_id)
-- after processing the locked update."

local function SendGift(store, receiver_key, item)
    return store:GlobalUpdateProfileAsync(receiver_key, function(global_updates)
        global_updates:AddActiveUpdate({Type = "Gift", Item = item})
    end)
end

-- Stacking gifts to a celebrity with ChangeActiveUpdate.
local function SendCoins(store, receiver_key, amount)
    return store:GlobalUpdateProfileAsync(receiver_key, function(global_updates)
        for _, update in ipairs(global_updates:GetActiveUpdates()) do
            local update_id, update_data = update[1], update[2]
            if update_data.Type == "Coins" then
                update_data.Amount = update_data.Amount + amount
                global_updates:ChangeActiveUpdate(update_id, update_data)
                return
            end
        end
        global_updates:AddActiveUpdate({Type = "Coins", Amount = amount})
    end)
end

local function HandleLockedUpdate(player_profile, update_id, update_data)
    if update_data.Type == "Gift" then
        table.insert(player_profile.Data.Items, update_data.Item)
    elseif update_data.Type == "Coins" then
        player_profile.Data.Coins = player_profile.Data.Coins + update_data.Amount
    end
    player_profile.GlobalUpdates:ClearLockedUpdate(update_id)
end

local function OnProfileLoaded(player_profile)
    local global_updates = player_profile.GlobalUpdates
    for _, update in ipairs(global_updates:GetActiveUpdates()) do
        global_updates:LockActiveUpdate(update[1])
    end
    for _, update in ipairs(global_updates:GetLockedUpdates()) do
        HandleLockedUpdate(player_profile, update[1], update[2])
    end
    global_updates:ListenToNewActiveUpdate(function(update_id, update_data)
        global_updates:LockActiveUpdate(update_id)
    end)
    global_updates:ListenToNewLockedUpdate(function(update_id, update_data)
        HandleLockedUpdate(player_profile, update_id, update_data)
    end)
end

-- Offline: gifts wait in the profile; Coins gifts stack into one update.
SendGift(OtherStore, "Celebrity", "Sword")
SendCoins(OtherStore, "Celebrity", 5)
local pending = SendCoins(OtherStore, "Celebrity", 7)
T.eq(#pending:GetActiveUpdates(), 2, "stacked: one Gift and one Coins update")
T.eq(pending:GetActiveUpdates()[2][2].Amount, 12, "Coins stacked")

local celebrity = ProfileStore:LoadProfileAsync("Celebrity", "ForceLoad")
OnProfileLoaded(celebrity)
-- Online: another server sends more.
SendGift(OtherStore, "Celebrity", "Shield")
T.run_until(function()
    return #celebrity.Data.Items == 2 and celebrity.Data.Coins == 12 and
           #OtherStore:ViewProfileAsync("Celebrity").GlobalUpdates:GetLockedUpdates() == 0
           and #OtherStore:ViewProfileAsync("Celebrity").GlobalUpdates:GetActiveUpdates()
               == 0
end, 1, 300, "all gifts processed and cleared")
T.ok(T.same(celebrity.Data.Items, {"Sword", "Shield"}), "each gift once")
celebrity:Release()

ProfileService.Shutdown()
T.eq(ProfileService.ServiceLocked, true, "ServiceLocked")
T.done()
