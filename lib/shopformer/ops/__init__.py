"""Operations over the whole pipeline: the demo, the summary, forgetting users, promoting models."""
