"""Helpers of the fault-injection suite: worker processes that can be SIGKILLed, a
private redis-server that can be stopped and restarted, and the Tortoise config the
worker processes load."""
