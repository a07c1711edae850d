"""Learning from feedback, in the server: explicit feedback as it arrives (feedback), the background
analyst (natural feedback, follow-up likelihood, principle proposals, votes), the review rules
(review), export to training files (export), and mining logged conversations offline (mine)."""
