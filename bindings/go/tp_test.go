package m2c

import (
	"bytes"
	"testing"
)

// TestShardsPlansAndReshardedSnapshots marshals the shard, plan and
// reshard calls: a 1 -> 2 -> 1 round trip is the same snapshot, rank
// snapshots load into caches of the rank configs, and refusals map to
// errors.
func TestShardsPlansAndReshardedSnapshots(t *testing.T) {
	full := smallConfig()
	rc, sh, err := ShardConfig(full, 2, 1)
	checkErr(t, err, nil)
	if rc.NumHeads != full.NumHeads/2 || sh.Rank != 1 || sh.TPSize != 2 || sh.HeadEnd != full.NumHeads || sh.SnapshotBytes == 0 {
		t.Fatalf("rank 1 of 2: %+v %+v", rc, sh)
	}
	if sh.XEnd-sh.XBegin != uint64(rc.IntermediateSize) {
		t.Fatalf("x channels %d..%d for intermediate %d", sh.XBegin, sh.XEnd, rc.IntermediateSize)
	}
	_, _, err = ShardConfig(full, 2, 2)
	checkErr(t, err, ErrOutOfRange)
	_, _, err = ShardConfig(full, 0, 0)
	checkErr(t, err, ErrInvalidArg)
	plan, err := ReshardPlan(full, 1, 2)
	checkErr(t, err, nil)
	if len(plan) == 0 || plan[0].Len == 0 {
		t.Fatalf("plan = %+v", plan)
	}
	_, err = ReshardPlan(full, 1, 3)
	checkErr(t, err, ErrInvalidArg)

	c := mustNew(t, full)
	defer c.Close()
	fill(t, c)
	snap, err := c.SaveSlot(1)
	checkErr(t, err, nil)
	two, err := ReshardSnapshots(full, 1, [][]byte{snap}, 2)
	checkErr(t, err, nil)
	for r, s := range two {
		cfg, _, err := ShardConfig(full, 2, uint32(r))
		checkErr(t, err, nil)
		rank := mustNew(t, cfg)
		checkErr(t, rank.LoadSlot(0, s), nil)
		rank.Close()
	}
	back, err := ReshardSnapshots(full, 2, two, 1)
	checkErr(t, err, nil)
	if !bytes.Equal(back[0], snap) {
		t.Fatal("1 -> 2 -> 1 changed the snapshot")
	}
	two[1][100] ^= 1
	_, err = ReshardSnapshots(full, 2, two, 1)
	checkErr(t, err, ErrCorrupt)
	_, err = ReshardSnapshots(full, 2, two[:1], 1)
	checkErr(t, err, ErrShapeMismatch)
}
