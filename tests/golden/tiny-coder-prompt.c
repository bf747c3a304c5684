/* Append one byte to the ring buffer; returns 0, or -1 when it is full. */
int ring_put(struct ring *r, uint8_t byte)
{