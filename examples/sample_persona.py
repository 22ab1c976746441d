"""Who is in the sample export and what they talk about: the data behind examples/make_sample.py.

Mira Solberg (the owner) is a bike mechanic and climber in Trondheim. Everything here is invented.

Conversation templates use a tiny grammar, expanded by make_sample.py:
- `<a|b|c>` picks one alternative (nestable; `<|x>` makes `x` optional);
- `{slot}` is filled from SLOTS once per session, so a session stays on one route, film or bike part;
- ` // ` splits one turn into a burst of separate messages;
- a message starting `PHOTO:` is a photo (the rest is its caption), `STICKER:` a sticker (the rest is its
  emoji), `VOICE:` a voice message, `FWD:<n>` a forward of CHANNEL_POSTS[n].
Lines are `(speaker, templates)`: speaker "me" is the owner, "them" the other person in a personal chat,
"any" a group member other than the previous speaker, or a member key such as "amir".
"""

OWNER = {
    "id": 5550100001,
    "first_name": "Mira",
    "last_name": "Solberg",
    "phone_number": "+00 000 00 001",
    "username": "@mira_wrench",
    "bio": "bikes rocks coffee",
}

PEOPLE = {
    "tomas": {"id": 5550100102, "name": "Tomas Berg"},
    "ingrid": {"id": 5550100103, "name": "Ingrid Solberg"},
    "jonas": {"id": 5550100104, "name": "Jonas Lie"},
    "sofie": {"id": 5550100105, "name": "Sofie Andersen"},
    "hilde": {"id": 5550100106, "name": "Hilde Solberg"},
    "erik": {"id": 5550100107, "name": "Erik Nygaard"},
    "amir": {"id": 5550100108, "name": "Amir Haddad"},
    "line": {"id": 5550100109, "name": "Line Dahl"},
    "bot": {"id": 5550100900, "name": "Crag Weather Bot"},
}

GROUP = {
    "id": 2150100201,
    "name": "Crux Crew",
    "founders": ["tomas", "sofie", "amir"],
    # Line joins later: Tomas adds her this many days into the export.
    "late_member": "line",
    "late_member_day": 40,
    "late_member_inviter": "tomas",
}

CHANNEL = {"id": 2150100300, "name": "Trondheim Cycling News"}

CHANNEL_POSTS = [
    "The bike path along Nidelva is closed for repairs until the end of the month. Detour map: "
    "https://example.org/trondheim/detour",
    "Spring service week: bring your bike to the square on Saturday for free brake checks! #sykkelbyen",
    "New bike counter record on Elgeseter bridge: 4,212 riders yesterday. https://example.org/counter",
    "Reminder: studded tyres are not needed after 1 April. Please swap them to spare the asphalt.",
    "Trondheim's bike lift Trampe is back in service from today. https://example.org/trampe",
]

SAVED_NOTES = [
    "shopping list // chalk // finger tape // chain lube // cat food",
    "the long goodbye beta // left heel on the arete // crimp rail // big move to the jug dont hesitate",
    "kvitberget topo https://example.com/topo/kvitberget",
    "PHOTO:topo for storsva",
    "ask jonas about july holiday",
    "FWD:0",
    "wheel build for erik // 32h rims // double butted spokes // 3 cross",
    "mums bday in august // spa weekend with ingrid",
    "PHOTO:",
    "train to oslo friday 14th 15:07",
]

BOT_EXCHANGES = [
    ("/start", "Welcome to Crag Weather! Send /forecast followed by a crag name."),
    ("/forecast kvitberget", "Kvitberget, Saturday: 14°C, dry, wind 3 m/s from the north-west. Good friction!"),
    ("/forecast storsva", "Storsva, Sunday: 9°C, showers after 14:00. Rock may stay wet on the slab."),
    ("/forecast grytdalen", "Grytdalen, tomorrow: 17°C, sunny, light wind. Expect crowds."),
]

# Slot pools. A session draws one value per slot; ROUTES and REPAIRS draw a whole row so that a route's
# grade and crag (or a repair's part, symptom and fix) stay consistent.
ROUTES = [
    ("The Long Goodbye", "7a", "Kvitberget"),
    ("Salt and Vinegar", "6b+", "Kvitberget"),
    ("Torrfisk", "6c", "Storsva"),
    ("Crimp Shrimp", "6a+", "Storsva"),
    ("Mormor's Slab", "5+", "Grytdalen"),
    ("Ninety Degrees", "6c+", "Grytdalen"),
    ("Nordlys Arete", "6b", "Ulvhammer"),
    ("Black Sheep", "7a+", "Ulvhammer"),
    ("Nine Lives", "6c", "Kvitberget"),
    ("Kaffekoppen", "6a", "Storsva"),
]

REPAIRS = [
    ("rear derailleur", "skips gears", "index it and check the hanger"),
    ("chain", "slips under load", "new chain and probably a cassette"),
    ("brake pads", "squeal in the rain", "new pads and clean the rotors"),
    ("bottom bracket", "clicks when you pedal hard", "new bottom bracket"),
    ("headset", "knocks when you brake", "tighten and regrease the headset"),
    ("rear wheel", "rubs on the frame", "true the wheel and replace two spokes"),
    ("hydraulic brakes", "feel spongy", "bleed the brakes"),
    ("shifter cable", "shifts late", "new cable and housing"),
    ("freehub", "clunks when you coast", "service the freehub"),
]

SLOTS = {
    "when": ["tomorrow", "Saturday", "Sunday", "this weekend", "Thursday evening", "Friday after work",
             "Wednesday"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "time": ["8", "9", "10", "half 5", "6", "7", "half 9"],
    "gym_wall": ["the overhang", "the slab wall", "the comp wall", "the cave", "the 45 board"],
    "shoe": ["Skwamas", "Solutions", "Instincts", "Dragos", "Katanas"],
    "trip": ["Lofoten", "Romsdalen", "Flatanger", "Hemsedal"],
    "month": ["June", "July", "August"],
    "body": ["finger", "shoulder", "elbow", "wrist", "ankle"],
    "bike": ["gravel bike", "commuter", "old Peugeot", "cargo bike", "road bike", "mountain bike",
             "kid's bike", "e-bike"],
    "brand": ["Trek", "Canyon", "Cube", "Merida", "Specialized", "DBS"],
    "price": ["6500", "8000", "9500", "12000", "4500"],
    "film": ["The Slow North", "Ice Harbour", "Paper Moons", "Last Ferry to Bodo", "Kestrel",
             "Dust and Thunder", "The Lighthouse Keeper's Daughter", "Nine Winters"],
    "food": ["tacos", "fish soup", "ramen", "lasagne", "green curry", "falafel", "homemade pizza"],
    "place": ["the new ramen place at Bakklandet", "that taco bar on Olav Tryggvasons gate",
              "the Thai place by the river", "the bakery at Solsiden", "the burger truck at Lademoen"],
    "snack": ["chips", "popcorn", "cinnamon buns", "chocolate", "licorice"],
    "shift": ["10-18", "12-20", "8-16", "9-17"],
    "kid_thing": ["said 'bike' for the first time", "climbed onto the kitchen table",
                  "ate sand at the playground", "refused to wear socks all day",
                  "fell asleep in his pasta", "tried to feed his banana to the neighbour's dog",
                  "learned to say 'no' and now says it to everything"],
    "relative": ["Aunt Randi", "Grandma", "Cousin Tuva", "Aunt Berit"],
    "chore": ["the gutters", "the shed roof", "moving the old sofa", "cutting the hedge",
              "painting the fence"],
    "count": ["12", "15", "20", "9", "25", "30"],
    "color": ["purple", "yellow", "black", "green", "white"],
    "vgrade": ["4", "5", "6"],
    "dinner": ["lamb", "fish soup", "meatballs", "reindeer stew", "salmon"],
}


def them(*templates):
    return ("them", templates)


def me(*templates):
    return ("me", templates)


def by(who, *templates):
    return (who, templates)


def topic(name, start, steps, own=None, weight=1.0, once=False):
    """A conversation topic: `start` opens it (the contact writes first), `steps` are optional follow-ups
    kept in order, `own` starts it from the owner's side."""
    return {"name": name, "start": start, "steps": steps, "own": own, "weight": weight, "once": once}


TOMAS = [
    topic(
        "crag_day",
        start=[
            them("<Yo!|Hey!|Morning!|Hei!> <Forecast looks dry|Weather looks perfect|Sun all day according to "
                 "yr> {when}. <Up for {crag}?|{crag}?|Want to go to {crag}?>",
                 "<Are you free {when}?|What are you doing {when}?> Thinking {crag} if it stays dry."),
            me("<ja ja|sick|yes> // <im in|count me in|lets go> <🧗|>",
               "ja ja // <shop closes at 4 so after that|need to be back by 8 tho|free all day>",
               "sick // been waiting for this all week"),
        ],
        steps=[
            [them("What time should I pick you up? <{time} okay?|I was thinking {time}.>"),
             me("{time} works", "<{time} is good|{time}> // ill be outside",
                "bit later than {time} // <have to feed sprocket|shop stuff in the morning>")],
            [them("Should we bring the 70m rope? The lower-off on {route} is pretty far."),
             me("<ja ja|yep> take the 70", "70 // the 60 was sketchy last time <🙃|>")],
            [them("I really want to give {route} another go. I think the crux will go this time 💪"),
             me("<sick|ja ja> // <you got it|its yours this time> // <just|> <commit to|trust> the "
                "<left heel|high foot|undercling|crimp rail>",
                "you were so close last time // dont overthink the <top|crux|clip>")],
            [them("Will it be dry after all that rain on <Tuesday|Wednesday|Thursday>?"),
             me("<should be|prob> dry by <noon|lunch> // <its south facing|sun hits it early|wind helps>",
                "the slab will be wet // the overhang stays dry tho")],
            [them("I'll bring coffee and the crash pad. Can you bring the quickdraws?"),
             me("ja ja // <12 draws|all my draws> <and the stick clip|>", "yep // and snacks <lol|>")],
            [them("Topo in case you forgot where the lower-off is: {topo}", "Sending the topo so we pick the right "
                  "sector this time: {topo}"),
             me("ja ja // i know it by heart lol", "sick // the left sector is better in the morning")],
            [them("Should we ask the others too?"),
             me("<sure|ja ja> // <ill post in the group|amir wanted to come>",
                "<nah|maybe not> just us this time // <more burns|less waiting>")],
            [them("Great, see you {when} then! 🙌", "Perfect. Can't wait!"),
             me("<see you|ja ja|sick> <🧗|>", "see you // dont forget the rope this time <lol|🙃>")],
        ],
        own=[
            me("<weather looks good|{when} looks dry> // <{crag}|{crag} {when}> <🧗|>",
               "going to {crag} {when} // come"),
            them("Yes!! I'm in. <What time?|Same time as last time?|Pick you up at {time}?>",
                 "Oh nice, I think I can make it. <Morning or afternoon?|Is the approach still muddy?>"),
            me("{time} // <ill drive|you drive|ill bring coffee>", "<morning|after lunch> // no stress"),
        ],
        weight=2.0,
    ),
    topic(
        "beta",
        start=[
            them("Okay I've been thinking about the crux on {route} all day. <Is it left hand on the crimp or "
                 "the sloper?|Do you go left or right hand first?|How do you do the move after the third "
                 "bolt?>"),
            me("<crimp // sloper is a trap|left hand crimp // then bump to the sloper> <lol|>",
               "<left|right> first // then feet up high <and stand|no stress>"),
        ],
        steps=[
            [them("And the feet? I keep slipping off the smear."),
             me("high left foot on the <little edge|chip|ripple> // then just stand up",
                "dont smear // theres a tiny edge <to the right|below the bolt> // took me ages to see it")],
            [them("Did you clip before or after the big move?"),
             me("after // clipping before is <so pumpy|sketchy|a trap>", "before // from the good undercling")],
            [them("You make it sound easy 😅"),
             me("its not lol // took me <6|8|ten|so many> tries", "lol ok // it took me <two|three> sessions")],
            [them("Do you think {grade} is fair for it?", "Honestly it feels harder than {grade} to me."),
             me("<soft|stiff> for {grade} // <if you are tall|for short people lol>",
                "ja ja fair // the crux is like one grade harder tho")],
            [them("I'll film my next attempt so you can see where I go wrong."),
             me("ja ja send it", "sick // send it")],
            [them("Thanks, this helps a lot! 🙏"), me("no stress", "no stress // go send it <🧗|>")],
        ],
    ),
    topic(
        "gym",
        start=[
            them("Klatreloftet tonight? They reset {gym_wall} 🔥",
                 "<Gym later?|Climbing tonight?> I need to get out of the house."),
            me("<ja ja|sick> // after <6|my shift|7>",
               "cant tonight // <late shift|wheel build for a customer> // <tmrw|thursday> works",
               "ja ja // need to move after all day in the shop"),
        ],
        steps=[
            [them("Do you want to do a 4x4 session or just project?"),
             me("project // fingers are tired from work", "4x4 // need the endurance for {route}")],
            [them("I heard the new purple one on {gym_wall} is really hard."),
             me("lol ok // we will see", "sick // sounds like my kind of problem <🧗|>")],
            [them("Meet at the entrance at <6:30|7|half 7>?"),
             me("ja ja", "ok // might be 5 min late // bike has no <brakes|lights> lol")],
            [them("That session was brutal, my forearms are done 😵"),
             me("same // worth it tho", "lol ok // rest day tmrw")],
        ],
        own=[
            me("gym tonight // {gym_wall} got reset", "going to klatreloftet at <6|7> // come if you want"),
            them("<Yes, I'll be there!|Can't tonight, sorry. Tomorrow?|Maybe, depends on when I finish work.>"),
            me("ja ja", "ok no stress", "lol ok"),
        ],
        weight=1.5,
    ),
    topic(
        "send",
        start=[
            them("I SENT {route}!!! 🎉🎉", "Guess who finally sent {route} today? 😎"),
            me("<no way|sick|no way> // <so happy for you|finally|told you>", "sick // how did the crux feel"),
        ],
        steps=[
            [them("Honestly I almost fell at the last clip. My legs were shaking."),
             me("classic // but you held it", "lol ok // the last clip is the real crux")],
            [them("<Beers on Friday to celebrate?|This calls for pizza. Friday?|Celebration beers at the pub on Friday?>"),
             me("ja ja", "sick // first round on you lol")],
            [them("Your turn next. {route} is waiting for you."),
             me("lol ok // no pressure", "ja ja // next week maybe <🙃|>")],
        ],
        own=[
            me("sent {route} today <🧗|> // finally", "{route} is done // cant believe it"),
            them("WHAT! Congrats!! How did the crux go?", "No way!!! Tell me everything."),
            me("just went for it // <left heel held|didnt think at all|almost fell at the top>",
               "perfect conditions // cold and dry // felt easy for once"),
        ],
    ),
    topic(
        "gear",
        start=[
            them("Thinking of buying new shoes. <Skwamas or Solutions?|What do you think about {shoe}?>"),
            me("{shoe} // <the other ones kill my toes|best for heel hooks|worth the money>",
               "depends on your feet // try both at the shop"),
        ],
        steps=[
            [them("They're so expensive though. <1900 kr!|Almost 2000 kr.>"),
             me("check the sale at the outdoor shop <in june|>", "resole your old ones // way cheaper")],
            [them("Also need a new harness, mine is from 2015 😅"),
             me("lol ok // thats ancient", "ja ja time for a new one")],
            [them("Do you still have the spare belay device?"), me("yep // ill bring it", "ja ja // in my bag")],
        ],
    ),
    topic(
        "trip",
        start=[
            them("We should plan the {trip} trip. Is {month} still good for you?"),
            me("ja ja // need to ask jonas for time off", "{month} works // <end of|start of> {month}"),
        ],
        steps=[
            [them("Should we camp or rent a cabin?"),
             me("camp // cheaper", "cabin if it rains // tent if not lol")],
            [them("I can drive if you split fuel."), me("ja ja deal", "sick // ill do playlists")],
            [them("How many days do you think? Five?"),
             me("five is good", "<4|5|6> // fingers wont survive more")],
            [them("I'll make a list of routes we want to try."),
             me("sick // put {route} on it", "ja ja // easy ones the first day")],
            [them("This is going to be so good 🤩"), me("ja ja <🧗|>", "cant wait")],
        ],
    ),
    topic(
        "injury",
        start=[
            them("My {body} feels a bit weird after yesterday. <Should I be worried?|So annoying.>"),
            me("rest it // no stress skip a week", "ice and rest // dont climb on it <tmrw|this week>"),
        ],
        steps=[
            [them("But I'm so close on {route}!"),
             me("it will still be there lol", "lol ok // better than a pulley injury")],
            [them("Maybe I'll just do some easy laps?"), me("nah // rest", "easy laps is how i hurt mine lol")],
            [them("Fine. You're right. 😩"), me("ja ja", "i usually am <🙃|>")],
        ],
    ),
    topic(
        "tomas_bike",
        start=[
            them("Since <Monday|the weekend|yesterday> my {bike} {problem}. Any idea?"),
            me("prob the {part} // bring it in <saturday|tmrw>", "sounds like the {part} // {fix} <🔧|>"),
        ],
        steps=[
            [them("Is it safe to ride until then?"), me("ja ja // just dont race anyone", "yep // no stress")],
            [them("You're the best, beer is on me next time."), me("lol ok // deal", "sick")],
        ],
        weight=0.7,
    ),
]

INGRID = [
    topic(
        "emil",
        start=[
            them("Emil {kid_thing} today 😂 Honestly this kid is something else.",
                 "You won't believe what Emil did today. He {kid_thing}! ❤️"),
            me("haha // thats definitely our genes // give him a hug from me",
               "lol ok thats amazing // miss that little guy so much",
               "haha // i want a video next time // he is the best"),
        ],
        steps=[
            [them("He keeps pointing at your photo on the fridge and saying 'Mimi' ❤️"),
             me("stop // im melting // tell him mimi is coming soon",
                "thats the best thing ive heard all week // mimi loves him")],
            [them("Kasper says he's going to be a climber like you."),
             me("haha // ill get him tiny shoes for his birthday <🧗|>",
                "sick // ill teach him to boulder on your sofa")],
            [them("PHOTO:Look at him 😊", "PHOTO:", "PHOTO:Today's outfit, he chose it himself"),
             me("hes so big now // when did that happen", "that hat // i cant", "hes so cute // send more")],
            [them("Sleep has been terrible though. He's up at 5 every day."),
             me("oof // that sounds rough // you need a weekend off",
                "5 is criminal // sending you all the coffee vibes")],
            [them("Anyway, how are you? Haven't heard from you in a while!"),
             me("all good // busy at the shop // climbing a lot // nothing new really",
                "sorry been bad at texting // work is crazy but im good",
                "VOICE:")],
        ],
        own=[
            me("how is my favourite nephew // tell him mimi says hi",
               "PHOTO:saw this tiny bike at work and thought of emil"),
            them("He's great! He just learned to <ride his balance bike|say your name|climb the stairs> 😊"),
            me("sick // hes going to be a menace", "haha // cant wait to see it"),
        ],
        weight=1.5,
    ),
    topic(
        "visit",
        start=[
            them("When are you coming to Oslo next? Emil keeps asking for aunt Mira ❤️"),
            me("maybe <end of may|in june|after the {trip} trip> // miss you all",
               "soon i promise // looking at trains <this week|now>"),
        ],
        steps=[
            [them("You can have the guest room, Kasper finally finished painting it."),
             me("sick // finally a real bed and not the sofa lol", "ja ja // tell kasper thanks")],
            [them("We could go to the climbing gym here, they have a kids' wall too!"),
             me("yes // emil on the kids wall is the dream", "ja ja // ill bring my shoes")],
            [them("Let me know the dates so I can ask for time off."),
             me("will do // probably thursday to sunday", "ill check with jonas and let you know tmrw")],
            [them("Yay!! Can't wait ❤️"), me("me neither // love you", "same // hug emil from me")],
        ],
        own=[
            me("booked the train // <friday|thursday> the <14th|21st|7th> // arrive around 6",
               "coming to oslo <next weekend|in two weeks> // hope thats ok"),
            them("YES! 🎉 Emil is going to lose his mind. I'll pick you up at the station."),
            me("sick // see you then", "no stress i can take the tram // love you"),
        ],
    ),
    topic(
        "mum",
        start=[
            them("<Have you talked to Mum this week?|Did you speak to Mum lately?|Have you heard from Mum?> "
                 "<She sounded a bit tired on the phone.|She seemed a bit down on Sunday.|She sounded stressed.>"),
            me("called her sunday // she seemed ok // just busy with the garden i think",
               "not since <last week|tuesday> // ill call her tonight"),
        ],
        steps=[
            [them("<Dad says she's been doing too much with the house again.|She's been doing too much in the garden again, "
                  "according to Dad.|Dad says she won't sit still.>"),
             me("classic mum // ill drive down <saturday|next weekend> and help",
                "ja ja // ill talk to her // she never listens to me either lol")],
            [them("<Could you check on them a bit more often? You're closer than me.|Maybe you could pop by a bit more? "
                  "You're only an hour away.>"),
             me("of course // i try to go every other sunday", "yep // no stress // ill go more")],
            [them("Thank you. I worry about them sometimes."),
             me("i know // me too // but theyre tough", "they are fine // promise // ill keep you posted")],
        ],
    ),
    topic(
        "nights",
        start=[
            them("Long week at the hospital. Three night shifts in a row 😴",
                 "Just finished a 12 hour shift. My feet are gone."),
            me("oof // you deserve a whole week of sleep",
               "that sounds brutal // hope you get some rest // you are a hero"),
        ],
        steps=[
            [them("<Kasper took Emil to his parents so I can sleep all day tomorrow.|Kasper has Emil tomorrow, so I'm "
                  "sleeping until noon.|Tomorrow is my first day off in ages.>"),
             me("kasper is a legend // sleep until noon", "sick // phone off and sleep")],
            [them("<Are you still doing long days at the shop?|Still doing overtime at the shop?|"
                  "Is Jonas working you to death?>"),
             me("spring rush // like {count} bikes a day // everyone wants their bike fixed at once",
                "busy but fun // built a really nice wheel today <🔧|>")],
            [them("I honestly don't know how you fix bikes all day and then climb all evening."),
             me("lol ok // its the only thing keeping me sane", "coffee and stubbornness // family trait")],
        ],
    ),
    topic(
        "gift",
        start=[
            them("Mum turns 60 in August!! Any ideas for a gift?"),
            me("<a weekend trip|a nice dinner|an e-bike lol> // she talks about it all the time",
               "i can fix up her old bike and make it look new // plus something from both of us"),
        ],
        steps=[
            [them("Maybe a spa weekend for her and Dad?"),
             me("sick idea // she would love that", "yes // dad would complain but secretly love it")],
            [them("Should we split it? I can book and you send me half."),
             me("ja ja // split it", "deal // just tell me how much")],
            [them("I'll look at some options and send them to you."), me("ja ja // no stress", "sick // thanks")],
        ],
        once=True,
    ),
    topic(
        "life",
        start=[
            them("<How's life up north?|How are things in Trondheim?|What's new up north?> "
                 "<Still basically living at the shop? 😄|Still living at the shop?|Are you ever not at work? 😄>"),
            me("pretty much lol // fixed like {count} bikes this week",
               "haha yes // spring rush is wild // but i love it"),
        ],
        steps=[
            [them("Any news on the climbing front?"),
             me("still projecting {route} // so close", "did my first {grade} outside <🧗|> // very proud")],
            [them("<Love you, take care of yourself ❤️|Take care of yourself, okay? ❤️|Love you lots ❤️>"),
             me("love you too // talk soon", "you too // kiss emil for me")],
        ],
        weight=1.3,
    ),
]

JONAS = [
    topic(
        "shift",
        start=[
            them("Can you take <Saturday|Sunday|Monday|Thursday> {shift}? <Anders is sick.|I have a dentist "
                 "appointment.|My kid has a thing at school.>"),
            me("ok", "yep", "can do", "cant // {day} works", "ja ja"),
        ],
        steps=[
            [them("Thanks. I'll update the schedule."), me("ok", "no stress")],
            [them("You'll need to open, the keys are in the usual spot."), me("ok", "yep")],
            [them("Can you also check the delivery when it comes?"), me("yep", "sure")],
        ],
        weight=1.5,
    ),
    topic(
        "parts",
        start=[
            them("Did the <Shimano|SRAM|Continental> order arrive?",
                 "We're out of <11-speed chains|brake pads for the Maguras|29er tubes|bar tape>. Can you order?"),
            me("yep // in the back", "not yet // <tmrw|thursday>", "ordered", "done"),
        ],
        steps=[
            [them("How many <Schwalbe Marathons|GP5000s|inner tubes|cassettes> do we have left?"),
             me("{count}", "like {count}")],
            [them("Also, the guy with the cargo bike called again."), me("ill call him", "lol ok // again")],
        ],
    ),
    topic(
        "customer",
        start=[
            them("Customer coming at {time} for the {bike}. Is it done?"),
            me("almost // {fix} // 20 min", "done // on the stand", "yep done", "no // waiting for the {part}"),
        ],
        steps=[
            [them("What was wrong with it?"), me("{part} // {problem}", "{fix}")],
            [them("How much should I charge?"), me("<600|850|450|1200> plus parts", "one hour labour")],
            [them("Okay. He's also asking about a full service."), me("book him next week", "ok // tuesday")],
        ],
        weight=1.5,
    ),
    topic(
        "opening",
        start=[
            them("Can you open <tomorrow|on Saturday>? I'll be in at 12.", "Are you opening tomorrow?"),
            me("yep", "ok // ill be there at <8|half 8>", "yep 8"),
        ],
        steps=[
            [them("Remember the alarm code changed last week."), me("got it", "ok")],
            [them("And the Trek that's been waiting for three weeks, can you call the owner?"),
             me("ok // ill call", "yep")],
        ],
    ),
    topic(
        "tools",
        start=[
            them("Where's the <torque wrench|chain whip|bleed kit|spoke tension meter|headset press>?"),
            me("drawer under the truing stand", "my bench", "back room // top shelf",
               "took it home // bring it tmrw sorry"),
        ],
        steps=[[them("Found it. Thanks."), me("ok", "no stress")]],
    ),
    topic(
        "schedule",
        start=[
            them("Next week's schedule is up. Let me know if anything is wrong.",
                 "Staff meeting <Monday|Wednesday> at 8:30, before opening."),
            me("ok", "seen", "ok // ill be there"),
        ],
        steps=[
            [them("Also, you asked about holiday: July 8-19 is fine."),
             me("sick // thanks", "ja ja // thanks")],
        ],
        own=[
            me("running <10|15|20> min late // <flat tyre lol|chain snapped|bridge closed>", "sick today // sorry",
               "took the {bike} home to finish it // back tmrw"),
            them("<Okay, no problem.|Okay, thanks for letting me know.|Get well soon!>"),
            me("ok", "thx"),
        ],
    ),
]

SOFIE = [
    topic(
        "film_night",
        start=[
            them("Film night on {day}? I'm thinking {film}. Apparently it's really sad 😅",
                 "I need a film night. {film} at mine on {day}?"),
            me("ja ja // ill bring {snack}", "sick // no sad endings pls lol", "cant {day} // next week tho"),
        ],
        steps=[
            [them("Should we invite Line too?"), me("ja ja", "sure // more {snack}")],
            [them("Trailer if you want a preview: {trailer}"),
             me("lol ok // looks sad already", "sick // no spoilers")],
            [them("My place at 8? I'll make popcorn."), me("ja ja", "8 works")],
            [them("I've heard the ending is a total twist!! No spoilers if you've seen it."),
             me("havent seen it // no stress", "lol ok")],
        ],
        own=[
            me("film night {day} // your pick", "i need a film night // {film} maybe"),
            them("Yes please!! 🎬 My place, 8?"),
            me("ja ja", "sick // ill bring {snack}"),
        ],
    ),
    topic(
        "film_review",
        start=[
            them("Okay, what did you think of {film}?? I cried twice 😭"),
            me("the ending was a lot // loved the <music|boat scene|dog>", "i cried once // dont tell anyone"),
        ],
        steps=[
            [them("The main actor was SO good. I need to see everything he's been in."),
             me("ja ja // he was great", "lol ok obsessed")],
            [them("What should we watch next time?"),
             me("something funny // i cant cry again", "your pick // no horror")],
        ],
    ),
    topic(
        "food",
        start=[
            them("I tried {place} yesterday! Honestly life changing 😍",
                 "Have you been to {place}? Everyone's talking about it."),
            me("sick // need to go", "not yet // next week"),
        ],
        steps=[
            [them("We should go together! {day}?"), me("ja ja // {day} works", "{day} <works|after 7>")],
            [them("Their <dumplings|tacos|desserts> are unreal."),
             me("ok im hungry now lol", "stop // im at work and hungry")],
        ],
        own=[
            me("went to {place} // you were right // so good", "{place} tonight // come"),
            them("Told you!! 😍 We should go together next time.", "Omg yes, I'm in! What time?"),
            me("ja ja // {day}", "7 // no stress"),
        ],
    ),
    topic(
        "dinner",
        start=[
            them("Dinner at mine on {day}? Making {food} 😋"),
            me("sick // ill bring <dessert|bread|wine|ice cream>", "ja ja // after climbing so maybe 8"),
        ],
        steps=[
            [them("Any allergies I forgot about? 😅"), me("nope // i eat everything", "no // just no mushrooms")],
            [them("Bring your appetite!"), me("always", "lol ok")],
        ],
    ),
    topic(
        "vent",
        start=[
            them("My boss wants me to redo the whole presentation 🙄 Due tomorrow, of course.",
                 "Worst day ever. The printer ate my report and then the bus didn't come."),
            me("lol ok thats rough", "ugh // sorry // that sucks"),
        ],
        steps=[
            [them("I need a drink. Or a holiday. Or both."),
             me("both // tonight", "come climbing // punch some plastic")],
            [them("Thanks for listening 🙏"), me("no stress // anytime", "always")],
        ],
    ),
    topic(
        "sofie_bike",
        start=[
            them("My chain keeps falling off 😩 Can I bring my bike by the shop?"),
            me("ja ja // <tuesday|wednesday|thursday> after 4", "bring it // no stress <🔧|>"),
        ],
        steps=[
            [them("How much will it cost me? 😬"), me("coffee lol", "nothing // friend price")],
            [them("You're the best!"), me("i know <🙃|>", "lol ok")],
        ],
        weight=0.6,
    ),
]

HILDE = [
    topic(
        "sunday",
        start=[
            them("Hi Mira. Are you coming for dinner on Sunday? Dad is making {dinner}. Hugs, Mum",
                 "Hello dear! Sunday dinner as usual? Let me know so I can plan."),
            me("ja ja // ill be there around <4|5>", "yes // cant wait",
               "cant this sunday // climbing trip // next one for sure"),
        ],
        steps=[
            [them("Do you want to bring anything? No need, but Dad asked."),
             me("ill bring dessert", "nope // just me")],
            [them("Will you take the bus or should Dad pick you up at the station?"),
             me("ill bike", "bus // no stress")],
            [them("Cycle safely! 😊"), me("always <🔧|>", "ja ja mum")],
        ],
        own=[
            me("coming sunday // ill bring dessert", "cant come sunday // sorry mum // next week for sure",
               "can i come for dinner sunday // miss dads {dinner}"),
            them("Lovely! Dad will be happy. 😊", "Oh, that's a shame. Next week then! Hugs, Mum",
                 "Of course, dear! You never need to ask."),
            me("ja ja", "love you", "sick // see you"),
        ],
        weight=1.5,
    ),
    topic(
        "weather",
        start=[
            them("I saw on the news it will be stormy this week. Please be careful on the bike. Love, Mum"),
            me("no stress mum // i have good lights", "ja ja // ill take the bus if its bad"),
        ],
        steps=[
            [them("And wear your helmet!"), me("always do", "yes mum")],
            [them("Good. Dad says hello."), me("hi dad")],
        ],
    ),
    topic(
        "relatives",
        start=[
            them("{relative} says hello. She asked if you're still climbing those cliffs 😊"),
            me("haha yes // tell her im careful", "say hi back // yes still climbing"),
        ],
        steps=[
            [them("She also asked if you have a boyfriend. I said I don't know 😄"),
             me("lol ok // no comment", "mum // please")],
            [them("Are you still coming to the summer party in July?"), me("ja ja", "yes if i get time off")],
        ],
    ),
    topic(
        "help",
        start=[
            them("Could you help Dad with {chore} next weekend? His back is not so good."),
            me("ja ja // saturday morning", "yes // ill come saturday"),
        ],
        steps=[
            [them("Thank you dear. I'll make waffles."), me("sick // waffles", "deal")],
            [them("Dad says you don't need to bring tools, but I think you should."),
             me("ill bring my tools // his are from the 80s lol", "lol ok // bringing them")],
        ],
    ),
    topic(
        "mum_bike",
        start=[
            them("My bike makes a strange noise when I brake. Is it dangerous?"),
            me("prob the pads // bring it sunday and ill look", "dont ride it till i check // ill come by"),
        ],
        steps=[
            [them("It's the blue one, the old Peugeot. Is it even worth fixing?"),
             me("yes // its a good bike", "always worth it // new pads and cables and it rides like new")],
            [them("Thank you, my favourite mechanic ❤️"), me("your only mechanic lol", "ja ja")],
        ],
    ),
    topic(
        "photos",
        start=[
            them("Did you see the photos of Emil that Ingrid sent? He's so big now!"),
            me("yes // so cute", "yes // he looks like dad lol"),
        ],
        steps=[[them("I wish they lived closer."), me("me too // maybe they move back one day", "i know")]],
    ),
    topic(
        "new_phone",
        start=[
            them("I got a new phone and lost all my numbers. Can you send me yours again? And Ingrid's?"),
            me("mine is +47 000 00 000 // ingrid has the same as before // ill ask her to text you"),
        ],
        steps=[[them("Thank you dear. Technology!"), me("no stress mum")]],
        once=True,
    ),
]

ERIK = [
    topic(
        "diagnose",
        start=[
            them("Hey Mira, since the weekend my {bike} {problem}. Any idea what's going on?"),
            me("prob the {part} // {fix}", "sounds like the {part} // bring it in"),
        ],
        steps=[
            [them("Can I fix it myself or should I bring it in?"),
             me("bring it // 10 min job", "you can try // youtube it // or bring it in")],
            [them("When are you working this week?"), me("most days // come {day}", "{day} after 12")],
            [them("Cheers! You're a lifesaver 👍"), me("no stress", "ja ja <🔧|>")],
        ],
        own=[
            me("your {bike} is ready // pick it up whenever", "found the problem // {part} // {fix}"),
            them("Amazing, thanks! I'll come by after work.", "Great! What do I owe you?",
                 "Ah, that makes sense. Do it, please!"),
            me("no stress", "beer lol", "ja ja"),
        ],
        weight=2.0,
    ),
    topic(
        "tubeless",
        start=[
            them("Is it worth going tubeless on the gravel bike?"),
            me("yes // fewer flats // lower pressure", "def // i can set it up <thursday|next week>"),
        ],
        steps=[
            [them("How much does it cost roughly?"),
             me("tape valves and sealant // like <600|800> kr", "depends on your rims // bring it and ill check")],
            [them("Sold! I'll drop it off tomorrow."), me("sick", "ja ja")],
        ],
    ),
    topic(
        "buying",
        start=[
            them("Looking at a used {brand} for {price} kr on Finn. Good deal?"),
            me("send pics", "maybe // check the frame near the bottom bracket // and how worn the chain is"),
        ],
        steps=[
            [them("PHOTO:Here it is", "PHOTO:"),
             me("looks clean // check the fork seals", "drivetrain looks done // ask for <1000|1500> off")],
            [them("Would you come with me to look at it?"), me("ja ja // after work", "yep // {day}")],
        ],
    ),
    topic(
        "thanks",
        start=[
            them("Bike rides like new, thank you!! What do I owe you?"),
            me("beer lol", "no stress // pay the shop for the parts", "buy me a coffee sometime"),
        ],
        steps=[[them("At least let me buy you dinner."), me("lol ok // deal", "fine // tacos")]],
    ),
    topic(
        "invoice",
        start=[
            them("Could you send the invoice for the wheel build to my work email? erik.nygaard@example.com"),
            me("ja ja // jonas does invoices // ill tell him"),
        ],
        steps=[[them("Got it, thanks!"), me("no stress")]],
        once=True,
    ),
    topic(
        "pics",
        start=[
            them("The photos of the frame crack are too blurry on here. Can I email them?"),
            me("mira.solberg@example.com // telegram kills the quality"),
        ],
        steps=[[them("Sent! Let me know what you think."), me("looks like paint only // not the carbon // no stress")]],
        once=True,
    ),
    topic(
        "news",
        start=[
            them("Are you riding to work with the bridge closed?"),
            me("FWD:0 // lol ok this detour is long"),
        ],
        steps=[[them("Ugh, that adds like 10 minutes."), me("ja ja // more training")]],
        once=True,
    ),
]

GROUP_TOPICS = [
    topic(
        "session",
        start=[
            by("any", "Who's in for Klatreloftet on {day}?", "Climbing on {day}? I need to get out of the office 😩"),
            by("any", "Me! Need to redeem myself after last week 😂", "I'm in!"),
            me("ja ja // im in", "in <🧗|>", "sick // after 6"),
        ],
        steps=[
            [by("any", "<7 works for everyone?|Shall we say 7?|6:30 or 7?>"), me("ja ja", "7")],
            [by("amir", "@mira_wrench are you going to flash everything again? 😤"),
             me("lol ok // we will see", "only the purple ones")],
            [by("sofie", "I'll come but I'll mostly sit and watch 😂"), by("amir", "Classic Sofie"),
             me("lol ok // belay slave", "sofie the coach")],
            [by("any", "<Pizza after?|Burgers after?|Food after? I'll be starving.>"),
             me("sick", "ja ja // always")],
        ],
        own=[
            me("gym {day} // who is in", "klatreloftet {day} at 7 // {gym_wall} got reset"),
            by("any", "Me!", "Count me in 💪", "Can't, work dinner 😭"),
            me("sick", "lol ok"),
        ],
        weight=2.0,
    ),
    topic(
        "banter",
        start=[
            by("amir", "Mira flashed the {color} V{vgrade} yesterday and didn't even say anything. Respect 😤",
               "Just saw Mira do a one-arm lock-off for fun. I'm quitting climbing 😂"),
            me("lol ok // it was soft", "it was soft // dont tell the setters"),
        ],
        steps=[
            [by("sofie", "Soft she says 🙄"), me("it was", "lol")],
            [by("tomas", "She's been crushing lately. It's the bike shop forearms."),
             me("truing wheels is the best training lol", "ja ja // 8 hours of wrenching a day <🔧|>")],
            [by("any", "Teach me your ways 🙏"),
             me("lol ok // first lesson // stop overgripping", "no stress // thursday")],
            [by("amir", "I'm going to send it next week. Mark my words."), me("sick", "lol ok")],
        ],
        weight=1.5,
    ),
    topic(
        "cabin",
        start=[
            by("tomas", "Cabin trip to {crag} in {month}, who's coming? I can book the cabin this week."),
            me("ja ja // in", "sick // me"),
        ],
        steps=[
            [by("any", "I'm in!"), by("any", "Me too, if there's a sauna 😅")],
            [by("amir", "Who's driving? My car fits 5 but the crash pads won't fit."),
             me("@tomas_climbs has the van", "ill bring the bike trailer lol")],
            [by("tomas", "Cabin is 2400 total, so 480 each."), me("ja ja // ill vipps you", "sick")],
            [by("sofie", "I'll make a shopping list. Requests?"),
             me("coffee // lots", "chocolate and coffee // no mushrooms")],
        ],
        weight=0.4,
    ),
    topic(
        "games",
        start=[
            by("sofie", "Pizza and board games at mine on Saturday? 🍕", "Games night on {day}? I bought a new one!"),
            me("sick", "ja ja // bringing catan"),
        ],
        steps=[
            [by("amir", "Only if Mira doesn't win every time"),
             me("lol ok // no promises", "i cant help it <🙃|>")],
            [by("any", "What time?"), by("sofie", "7-ish!")],
        ],
    ),
    topic(
        "borrow",
        start=[
            by("any", "Can anyone lend me a belay device? Lost mine again 🙈"),
            me("i have a spare // bring it thursday", "yep // in my bag"),
        ],
        steps=[
            [by("amir", "How do you lose a belay device twice 😂"), me("lol ok", "talent")],
            [by("any", "<Thank you Mira!! ❤️|You're a star, Mira!|Lifesaver 🙏>"), me("no stress")],
        ],
    ),
    topic(
        "reset",
        start=[
            by("tomas", "They reset {gym_wall}! New problems everywhere 🔥"),
            me("sick // going tonight", "ja ja // saw it this morning"),
        ],
        steps=[
            [by("any", "The {color} one in the corner looks impossible."),
             me("lol ok // challenge accepted", "its a dyno // looks fun")],
            [by("any", "Anyone going after work?"), me("me // after 6", "ja ja")],
        ],
    ),
    topic(
        "meme",
        start=[
            by("amir", "FWD:meme"),
            by("sofie", "😂😂😂"),
            me("lol ok // too real", "this is tomas on every slab"),
        ],
        steps=[[by("tomas", "I feel attacked."), me("lol")]],
        weight=0.5,
    ),
    topic(
        "bike_news",
        start=[
            me("FWD:2 // lol ok everyone is biking now"),
            by("any", "Good! Less traffic for the rest of us."),
        ],
        steps=[[by("tomas", "Was that you counted 40 times going back and forth to the shop?"), me("lol ok // probably")]],
        once=True,
    ),
]

# Texts forwarded from outside the export (no chat of their own in it).
OUTSIDE_FORWARDS = {
    "meme": ("Climbing Memes", "Me: this route is soft for the grade. Also me: falls at the first bolt."),
}

# Per chat: how many sessions; the local hours they start in and how often late at night; how often the
# owner starts one or never answers; how many topic steps and small-talk steps; how often the contact adds
# an aside; the owner's emoji, her reaction words and the contact's stickers here.
CHATS = [
    {"key": "tomas", "topics": TOMAS, "sessions": 90, "hours": (7, 23), "late": 0.05, "own": 0.25,
     "ignored": 0.03, "steps": (2, 6), "talk": (0, 2), "aside": 0.12, "emoji": "🧗",
     "reactions": ["ja ja", "sick", "lol ok"], "stickers": ["💪", "😎", "🔥"]},
    {"key": "ingrid", "topics": INGRID, "sessions": 78, "hours": (11, 23), "late": 0.06, "own": 0.25,
     "ignored": 0.03, "steps": (2, 5), "talk": (1, 2), "aside": 0.15, "emoji": "🙃",
     "reactions": ["haha", "lol ok", "ja ja"], "stickers": ["❤️", "😘", "🥰"]},
    {"key": "jonas", "topics": JONAS, "sessions": 60, "hours": (7, 18), "late": 0.0, "own": 0.25,
     "ignored": 0.05, "steps": (1, 3), "talk": (0, 1), "aside": 0.08, "emoji": "🔧",
     "reactions": [], "stickers": ["👍"]},
    {"key": "sofie", "topics": SOFIE, "sessions": 55, "hours": (11, 23), "late": 0.08, "own": 0.25,
     "ignored": 0.04, "steps": (2, 4), "talk": (1, 2), "aside": 0.12, "emoji": "🙃",
     "reactions": ["lol ok", "sick", "ja ja"], "stickers": ["😂", "🎬", "🙈"]},
    {"key": "hilde", "topics": HILDE, "sessions": 36, "hours": (9, 21), "late": 0.0, "own": 0.3,
     "ignored": 0.03, "steps": (1, 3), "talk": (0, 1), "aside": 0.2, "emoji": "🙃",
     "reactions": ["ja ja"], "stickers": ["🌷"]},
    {"key": "erik", "topics": ERIK, "sessions": 28, "hours": (9, 22), "late": 0.0, "own": 0.3,
     "ignored": 0.0, "steps": (1, 3), "talk": (0, 1), "aside": 0.12, "emoji": "🔧",
     "reactions": ["ja ja", "sick"], "stickers": ["👍"]},
    {"key": "group", "topics": GROUP_TOPICS, "sessions": 75, "hours": (10, 23), "late": 0.1, "own": 0.2,
     "ignored": 0.04, "steps": (2, 4), "talk": (0, 2), "aside": 0.2, "emoji": "🧗",
     "reactions": ["lol ok", "sick", "ja ja"], "stickers": ["😂", "🤣", "💪"]},
]

# Recurring facts (a trip's crag, a visitor's spot, a date's restaurant, a puppy's name) for memory to recall.
import sample_facts  # noqa: E402

SLOTS.update(sample_facts.SLOTS)
for _chat in CHATS:
    _chat["topics"] = _chat["topics"] + sample_facts.BY_CHAT.get(_chat["key"], [])

OWNER_STICKERS = ["🙃", "🧗", "🔧"]
# Replies that already are an answer: no reaction word goes in front of them.
ACKS = ("ja ja", "lol", "sick", "yep", "yes", "ok", "sure", "nope", "nah", "no stress", "haha", "same", "deal")
APOLOGIES = ["sorry saw this now", "sorry was at the crag // no signal", "sorry crazy day at the shop",
             "oops forgot to answer"]

# Small talk that fits into any session of a chat, between the topic's steps.
TALK = {
    "tomas": [
        [them("<How was the shop today?|How was work?|Busy day at the shop?|Survived work today?>"),
         me("busy // {count} bikes and one very angry man with a flat", "long day // rebuilt a {bike} from scratch <🔧|>",
            "quiet // trued wheels all afternoon", "fine // {count} repairs // my back hurts")],
        [them("<I did the hangboard routine you sent. My fingers hate you.|Hangboarded again this morning. "
              "My fingers are crying.|The hangboard and I are not friends today.>"),
         me("good // thats the point", "lol ok // means its working", "no stress // rest tmrw")],
        [them("<Amir says he wants to come next time, by the way.|Line asked if she can join us sometime.>"),
         me("ja ja // the more the merrier", "sick // they can carry the rope")],
        [them("<I can't stop thinking about {route}. It's becoming a problem.|Dreamt about the crux on {route} "
              "last night 😅|{route} lives in my head rent free.>"),
         me("same // its in my dreams", "lol ok // welcome to projecting", "classic // it means youre close")],
        [them("<Did you sleep at all? You sent that message at 2am 😅|Why are you always awake at 1am?>"),
         me("nope // sprocket woke me up", "lol ok // couldnt sleep // thinking about {route}")],
        [them("<Do you still have my headlamp from last time?|Did I leave my chalk bag in your bag?|Do you "
              "have my nut key?>"), me("yep // in my bag", "ja ja // ill bring it", "nope // check the van")],
        [them("<Watched a video of someone flashing {route}. Made me feel terrible 😂|Someone posted a video "
              "of {route} and they make it look like a ladder.>"),
         me("lol ok // they were 190 tall", "ignore it // videos lie")],
        [them("<Skin check: how are your tips?|How are your fingers after Sunday?>"),
         me("thin // sanding them tonight", "ok // taped one", "fine // bike grease is good for them lol")],
    ],
    "ingrid": [
        [them("<It's been raining here for a week straight.|Oslo is grey again.|We finally have sun here!> "
              "<How's the weather up there?|What's it like in Trondheim?>"),
         me("same // but i ride anyway", "sunny for once // went climbing after work", "windy // as always")],
        [them("<Did you watch the series I told you about?|Have you started the series yet?|Did you finish "
              "the series?>"),
         me("two episodes // its good", "not yet // no time // this weekend maybe", "yes // the ending tho")],
        [them("<How's Sprocket doing? Still stealing your socks?|And how's Sprocket?|Give Sprocket a cuddle "
              "from us!>"),
         me("every day // he has a pile under the bed", "PHOTO:<the criminal|sprocket says hi|>",
            "sprocket is fine // knocked my coffee off the table this morning // on purpose i think",
            "fat and happy // sleeps on my helmet")],
        [them("<Work is trying to give me more night shifts in the summer 😩|They want me on nights again "
              "next month.|The rota for the summer is a disaster.>"),
         me("say no // you need sleep", "ugh // tell them your sister said no", "oof // fight them")],
        [them("<Emil has a cold again, so we're all on the sofa today.|Emil is teething again. Nobody slept.|"
              "Daycare is closed today, so it's just me and Emil.>"),
         me("oof // poor guy // get well hugs", "VOICE:", "sofa day sounds nice tho", "send him a hug from mimi")],
        [them("<How's work at the shop?|Busy at the shop?|Is it still crazy at work?>"),
         me("spring rush // like {count} bikes a day", "busy but fun // built a really nice wheel today <🔧|>",
            "calmer now // finally time to clean the workshop")],
        [them("<Are you eating properly? You always forget when you're busy.|Did you eat today? Real food?>"),
         me("lol ok mum // yes i eat", "mostly // sofie feeds me on thursdays", "cereal counts")],
    ],
    "jonas": [
        [them("<Busy day. 14 repairs booked.|Quiet today.|11 bikes waiting in the back.>"), me("ok", "ja ja")],
        [them("<The coffee machine is broken again.|We're out of coffee.>"),
         me("ugh", "ill look at it // prob the pump", "ill bring some")],
        [them("<Can you do the window display this week?|Can you put the new bikes out front?>"),
         me("ok", "ja ja // friday")],
        [them("Remember to log your hours for <May|June|July|last week>."), me("ok", "done")],
        [them("<The truing stand is wobbly again.|The compressor is making that noise again.>"),
         me("ill fix it", "ok // tmrw")],
        [them("Can you remind me to order more <sealant|brake fluid|chain lube>?"), me("ok", "yep")],
    ],
    "sofie": [
        [them("<How's your week been?|How are you?|How's life?|What's new?>"),
         me("long // too many flats", "good // climbed a lot", "ok // sprocket is sick // vet tmrw",
            "fine // tired // work is crazy")],
        [them("<My neighbour is learning the trumpet. At 11pm.|The people upstairs are moving furniture again. "
              "At midnight.>"),
         me("lol ok", "call the police // or buy earplugs")],
        [them("<We need a holiday. Somewhere warm.|I need sun. Like, real sun.>"),
         me("ja ja // spain // sport climbing", "anywhere with rocks")],
        [them("<I'm so tired this week.|Can't wait for the weekend.|Is it Friday yet?>"),
         me("same", "lol ok // two more days", "coffee")],
        [them("<What are you doing this weekend?|Any plans for the weekend?>"),
         me("{crag} if its dry", "sleeping // climbing // sleeping", "working saturday // ugh")],
    ],
    "hilde": [
        [them("<The garden is full of flowers now. You should come and see.|The apple tree is blooming!>"),
         me("ja ja // sunday", "nice // send a photo")],
        [them("<Are you eating well, dear? You looked thin last time.|Do you need anything from home?>"),
         me("yes mum", "ja ja // i eat all the time", "im fine mum")],
        [them("<Remember Grandma's birthday on Friday. Call her!|Call Grandma this week, she asked about you.>"),
         me("ja ja // will do", "yes // ill call her after work")],
        [them("Dad wants to know if you've <changed the tyres on your bike|fixed your lights> yet."),
         me("yes // tell him", "months ago lol")],
    ],
    "erik": [
        [them("<How's the shop? Busy season?|Busy at the shop these days?>"),
         me("crazy // everyone wants their bike now", "busy // book early lol")],
        [them("<Rode to Bymarka yesterday, the gravel bike is perfect now.|Did 80 km on Sunday and not one "
              "problem!>"), me("sick", "ja ja // told you")],
        [them("Do you sell <those tyre inserts|tubeless plugs|mudguards for gravel bikes>?"),
         me("yep // ask jonas", "yes // ill set some aside")],
    ],
    "group": [
        [by("any", "<Who took my chalk bag on Thursday? 👀|Someone has my brush. Confess.>"),
         me("lol ok // not me", "check the lost and found")],
        [by("any", "<Did anyone see the comp on the weekend? Insane.|That World Cup final though!>"),
         me("sick final", "ja ja // that dyno")],
        [by("any", "My forearms still hurt from <Tuesday|Thursday|the weekend> 😩"),
         me("lol ok // weak", "rest day then")],
        [by("any", "Anyone want to split a new crash pad? The outdoor shop has a sale."),
         me("i have two // borrow one", "ja ja // if its the big one")],
        [by("any", "Who has the 70m rope? We need it on <Saturday|Sunday>."),
         me("me // ill bring it", "tomas has it")],
        [by("tomas", "Weather for the weekend looks grim 🌧️"), me("lol ok // gym it is", "board session then")],
        [by("sofie", "PHOTO:Last night's crew 💪", "PHOTO:"), me("sick photo", "lol ok // my hair")],
        [by("any", "<Is the gym open on the holiday?|Is the gym open late on Friday?>"), by("any", "Only 12-18 I think."),
         me("ja ja // 12-18", "yep")],
    ],
}

# One-off news: each is told at most once in its chat.
NEWS = {
    "tomas": [
        [them("Have you seen the new guidebook for Trøndelag? 📖"),
         me("ja ja // jonas has it at the shop", "not yet // heard {crag} got a whole new sector")],
        [them("My van failed the inspection again 😩 Brakes this time."),
         me("lol ok // bring it to a real mechanic", "i only do bikes <🙃|> // sorry")],
        [them("I signed up for the bouldering comp in May. Why did I do that 😅"),
         me("sick // ill come and yell", "lol ok // you will crush")],
    ],
    "ingrid": [
        [them("Kasper says hi, by the way! He wants to know if you can look at his bike when you come."),
         me("ja ja // tell him to bring it // and a coffee", "sick // ill bring my tools")],
        [them("I found a box of our old photos at Mum's. You had the worst haircut in 2009 😂"),
         me("lol ok // we dont talk about that", "send it // actually dont")],
        [them("I'm thinking of taking up climbing again. Is that crazy with a toddler?"),
         me("not crazy // do it", "sick // the gym near you has childcare i think")],
        [them("Emil started at daycare this week! He cried, I cried, Kasper cried."),
         me("oof // big day // give him a hug", "haha // the whole family crying // classic solberg")],
    ],
    "jonas": [
        [them("Also, the new apprentice starts Monday."), me("ok", "sick")],
        [them("Customer left a 5-star review mentioning you."), me("lol ok", "nice")],
    ],
    "sofie": [
        [them("Line got the job!! 🎉"), me("sick // so happy for her", "yes // we need to celebrate")],
        [them("I started running. Don't laugh 😅"), me("lol ok // respect", "sick // come climbing too")],
        [them("Saw your shop on Instagram! You were in the background fixing a wheel 😂"),
         me("lol ok // famous", "ugh // i look so tired")],
    ],
    "hilde": [
        [them("Dad finally fixed the kitchen door. Only took him two years 😄"),
         me("lol ok // classic dad", "sick")],
        [them("Ingrid said you might visit Oslo. That's nice!"), me("ja ja // maybe in june", "yes // miss emil")],
    ],
    "erik": [
        [them("Are you doing the gravel race in September?"),
         me("nah // climbing trip", "maybe // if i train lol")],
        [them("My neighbour wants to know if you build wheels for other people too."),
         me("ja ja // send him to the shop", "yep // tell him to ask for me")],
    ],
    "group": [
        [by("amir", "New rule: whoever falls first buys coffee"), me("lol ok // deal", "youre buying then")],
        [by("any", "The climbing club is organising a cleanup day at {crag} on {day}."),
         me("sick // im in", "ja ja // ill bring gloves")],
        [by("amir", "Does the bike shop sell climbing shoes? Asking for a friend 👀"),
         me("nope // just bikes lol", "only bike shoes // wrong kind of grip")],
    ],
}

# When Mira starts a session herself on a topic that has no opening of her own: a nudge, then the
# contact tells the topic's news.
POKES = {
    "tomas": ["bored at work", "whats the plan this week", "alive"],
    "ingrid": ["hey you // whats new", "miss you // hows oslo", "how is my favourite family",
               "PHOTO:sprocket says hi"],
    "sofie": ["im bored // entertain me", "whats up", "alive"],
    "hilde": ["hi mum // how are you both", "hi mum"],
    "erik": ["hows the bike running"],
    "group": ["whats the plan this week", "anyone alive"],
}

# How a contact closes a conversation after Mira's last word, which she never answers: a thumbs-up, a thanks,
# a "see you" (sample_dialogue.close). A sticker of the contact's own now and then instead.
CLOSINGS = {
    "tomas": ["👍", "ok 👍", "sick, see you there", "deal", "ok cool", "haha ok"],
    "ingrid": ["❤️", "thanks!! 🥰", "ok love you", "perfect", "ok 😘", "yay"],
    "jonas": ["👍", "Ok thanks", "Thanks, see you", "Good.", "Ok"],
    "sofie": ["haha ok", "deal 😂", "ok!!", "👍", "lol ok", "perfect thanks"],
    "hilde": ["Thank you 🌷", "Ok, good", "👍", "Lovely. Hugs", "Good night"],
    "erik": ["👍", "ok thanks", "good", "Ok"],
}
CLOSING_SHARE = 0.45  # of conversations in a personal chat where Mira had the last word

# What a contact adds as a second message now and then.
ASIDES = {
    "tomas": ["<Also|Btw>, my van is making <weird noises|that rattling sound> again 😅",
              "<So psyched!|Psyched!|Can't wait!>",
              "<Cold tomorrow,|Temps are dropping,> so friction should be <good|great>.",
              "<Amir|Sofie|Line> says hi, by the way.",
              "<Haha.|Haha|😄>", "I've been hangboarding every <day|morning> this week 💪",
              "<My skin is|My tips are> still wrecked from last time."],
    "ingrid": ["Kasper says hi!", "Emil is <napping|finally asleep> so I have five minutes 😅",
               "<Miss you ❤️|Miss you so much ❤️|I miss you!>",
               "<It's raining here again, as always.|Sun is finally out here!|Oslo is freezing today.>",
               "Sorry, Emil is pulling my arm, back in a bit.", "<Haha|Hahaha> 😂"],
    "jonas": ["Thanks.", "<Busy|Crazy> day today.", "Call me if anything comes up."],
    "sofie": ["<Haha|Hahaha>", "<Also I'm starving.|I'm so hungry right now 😅>", "<Miss you!|Miss you 💕>",
              "Sorry, just had to share 😂", "Anyway!"],
    "hilde": ["Dad says hello.", "<Hugs, Mum|Love, Mum|Hugs from both of us>", "Take care, dear.",
              "The <tulips|roses|rhubarb> are doing well this year."],
    "erik": ["Cheers!", "No rush, by the way.", "<Thanks in advance 👍|Thanks!>",
             "Rode 60 km on Sunday, by the way 🚴"],
    "group": ["😂", "<Haha|Hahaha>", "Classic", "True", "Same", "Lol", "This chat 😂", "💀", "Facts", "Can confirm"],
}

# How each contact starts a sentence now and then, and the emoji they add (never the owner's own set).
FLOURISHES = {
    "tomas": (["Haha, ", "Okay, ", "Oh, ", "Right, "], ["💪", "😅", "🙌", "😄"]),
    "ingrid": (["Aww, ", "Haha, ", "Oh, ", "Okay, "], ["❤️", "😊", "🥰"]),
    "jonas": (["Ok. ", "Hi. "], []),
    "sofie": (["Haha ", "Omg ", "Okay ", "Wait, "], ["😂", "🙈", "😅", "✨"]),
    "hilde": (["Hello dear. ", "Oh, ", "Well, "], ["😊", "🌷"]),
    "erik": (["Ah, ", "Okay, ", "Hey, "], ["👍", "🙏"]),
    "group": (["Haha ", "Ok ", "Lol "], ["😂", "🔥", "👀"]),
}

# Sentence openings that read naturally after a flourish ("Okay, what did you think...").
STARTERS = {"What", "How", "Do", "Did", "Can", "Could", "Should", "Are", "Is", "The", "My", "We", "You",
            "Have", "Any", "That", "This", "Thanks", "Thank", "Great", "Perfect", "Also", "Maybe", "Just",
            "Will", "Your", "Where", "When", "Who", "Let", "Looking", "Thinking", "Customer", "Remember",
            "Dinner", "Film", "Climbing", "Cabin", "Sleep", "Long", "Honestly", "Anyway", "Sold", "Found"}
